"""``rmu demo``: real forgetting on a real model, offline, on two CPU cores.

Base SmolLM2-135M-Instruct (from a PyPI wheel; or Gemma 3 270M with ``model="gemma3-270m"``) is
measured on the demo benchmark (element symbols to forget, country capitals to keep, everyday
English for perplexity; or the kinds of animals and objects with ``topic="animals"``), unlearned
with RMU and with Adaptive RMU from the same starting weights, and measured again. The report folder gets
``results.json``, ``report.md``, ``accuracy.png`` and each run's step log.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from rmu.demo.benchmark import write_benchmark
from rmu.demo.model import DEFAULT_MODEL, demo_model, model_path
from rmu.demo.settings import DEFAULT, QUICK, DemoSettings  # here too: rmu.demo.run.DEFAULT keeps working
from rmu.demo.topics import DEFAULT_TOPIC, demo_topic
from rmu.engine import unlearn
from rmu.eval import evaluate, perplexity
from rmu.eval.tasks import load_task_file
from rmu.loading import load_model
from rmu.outputs import writes_folder


def measure(model, tokenizer, tasks: dict, general_text: list[str], settings: DemoSettings, progress: bool) -> dict:
    """Forget and retain accuracy (multiple choice) and perplexity on general English."""
    results = evaluate(model, tokenizer, list(tasks.values()), scoring=settings.scoring,
                       limit=settings.question_limit, progress=progress)
    scores = {f"{role}_accuracy": results[task.name].accuracy for role, task in tasks.items()}
    scores["general_perplexity"] = perplexity(model, tokenizer, general_text, progress=progress)
    return scores


@writes_folder("demo", inputs=("model_dir",))
def run_demo(output: str | Path = "rmu-demo", quick: bool = False, progress: bool = True,
             settings: DemoSettings | None = None, model_dir: str | Path | None = None,
             model: str = DEFAULT_MODEL, topic: str = DEFAULT_TOPIC, extra_measure=None,
             methods: tuple[str, ...] = ("rmu", "adaptive")) -> dict:
    """Run the whole demo and write its report folder; returns the results dictionary.

    ``model`` names a demo model (``rmu.demo.model.DEMO_MODELS``), ``topic`` a demo topic
    (``rmu.demo.topics.TOPICS``). ``model_dir`` replaces the demo model by another checkpoint
    folder (the tests use a tiny model). ``extra_measure(model, tokenizer, benchmark)``, when given,
    is called on the base model and on each unlearned one; the scores it returns (a dictionary) join
    that model's scores (``benchmarks/models_baseline.py`` adds the keyword attack this way).
    ``methods`` run in the order given, each from the base weights. Until the report is complete,
    the scores measured so far are kept in ``results.partial.json`` (removed at the end), so a long
    run stopped part way still shows what it measured.
    """
    spec, topic_spec = demo_model(model), demo_topic(topic)  # unknown names fail before any work
    settings = settings or (QUICK if quick else DEFAULT)
    started = time.perf_counter()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)

    description = str(model_dir) if model_dir else spec.description
    model_dir = Path(model_dir) if model_dir else model_path(spec.key, progress=progress)
    benchmark = topic_spec.build(seed=0)
    paths = write_benchmark(output / "data", benchmark)
    tasks = {"forget": load_task_file(paths["forget_questions"], name="forget_questions"),
             "retain": load_task_file(paths["retain_questions"], name="retain_questions")}
    model, tokenizer = load_model(model_dir)

    say("measuring the base model ...")
    models = {"base": measure(model, tokenizer, tasks, benchmark.general_text, settings, progress)}
    if extra_measure:
        models["base"].update(extra_measure(model, tokenizer, benchmark))
    partial = output / "results.partial.json"
    partial.write_text(json.dumps({"models": models}, indent=2))
    runs = {}
    for method in methods:
        say(f"unlearning with {'RMU' if method == 'rmu' else 'Adaptive RMU'} ...")
        config = settings.unlearn_config(model_dir, {topic_spec.forget_name: str(paths["forget_corpus"])},
                                         [str(paths["retain_corpus"])], method=method)
        result = unlearn(config, model=model, tokenizer=tokenizer, progress=progress)
        models[method] = measure(model, tokenizer, tasks, benchmark.general_text, settings, progress)
        if extra_measure:
            models[method].update(extra_measure(model, tokenizer, benchmark))
        models[method]["unlearn_seconds"] = round(result.seconds, 1)
        runs[method] = {"config": config.model_dump(), "coefficients": result.coefficients, "steps": result.records}
        (output / f"run_{method}.json").write_text(json.dumps(runs[method], indent=2))
        partial.write_text(json.dumps({"models": models}, indent=2))
        result.restore_original()  # the next method starts from the base weights

    results = {
        "model": description,
        "model_name": model_dir.name,
        "topic": {"name": topic_spec.key, "forget": topic_spec.forget_label, "retain": topic_spec.retain_label,
                  "summary": topic_spec.summary},
        "settings": asdict(settings) | {"quick": quick},
        "questions": {role: len(task.head(settings.question_limit).questions) for role, task in tasks.items()},
        "chance": 0.25,
        "models": models,
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    accuracy_chart(results, output / "accuracy.png")
    (output / "report.md").write_text(markdown_report(results))
    partial.unlink()
    say(f"report written to {output}/report.md ({results['seconds']:.0f} s in all)")
    return results


NAMES = {"base": "base", "rmu": "RMU", "adaptive": "Adaptive RMU"}


def markdown_report(results: dict) -> str:
    settings = results["settings"]
    lines = [
        f"# rmu demo: unlearning {results['topic']['forget']} from {results['model_name']}",
        "",
        f"Model: {results['model']}. {results['topic']['summary']} "
        f"({results['questions']['forget']} and {results['questions']['retain']} held-out 4-choice "
        f"questions, {settings['scoring']} scoring, chance {results['chance']:.2f}). General ability: "
        "perplexity on everyday English.",
        "",
        f"Layer {settings['layer']}, {settings['steps']} steps of {settings['batch_size']} x {settings['max_len']} "
        f"tokens, lr {settings['lr']}, alpha {settings['alpha']}, RMU c {settings['steering_coeff']}, "
        f"Adaptive RMU beta {settings['beta']} (first-batch rule), pads masked: {settings['mask_padding']}.",
        "",
        "| model | forget accuracy | retain accuracy | general perplexity | unlearning time |",
        "|---|---|---|---|---|",
    ]
    for key, scores in results["models"].items():
        seconds = f"{scores['unlearn_seconds']:.0f} s" if "unlearn_seconds" in scores else "-"
        lines.append(f"| {NAMES[key]} | {scores['forget_accuracy']:.3f} | {scores['retain_accuracy']:.3f} | "
                     f"{scores['general_perplexity']:.2f} | {seconds} |")
    lines += ["", "![accuracy](accuracy.png)", "", f"Total time: {results['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def accuracy_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    roles = ["forget_accuracy", "retain_accuracy"]
    figure, axis = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / len(models)
    for index, model in enumerate(models):
        values = [results["models"][model][role] for role in roles]
        positions = [r + (index - (len(models) - 1) / 2) * width for r in range(len(roles))]
        bars = axis.bar(positions, values, width, label=NAMES[model])
        axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.axhline(results["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
    axis.set_xticks(range(len(roles)), [f"forget ({results['topic']['forget']})",
                                           f"retain ({results['topic']['retain']})"])
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=8, loc="upper right")
    axis.set_title(f"{results['model_name']} before and after unlearning")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
