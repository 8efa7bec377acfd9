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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rmu.config import make_config
from rmu.demo.benchmark import write_benchmark
from rmu.demo.model import DEFAULT_MODEL, demo_model, model_path
from rmu.demo.topics import DEFAULT_TOPIC, demo_topic
from rmu.engine import unlearn
from rmu.eval import evaluate, perplexity
from rmu.eval.tasks import load_task_file
from rmu.loading import load_model
from rmu.outputs import writes_folder



@dataclass(frozen=True)
class DemoSettings:
    """Hyper-parameters of the demo runs, chosen on SmolLM2 (the README's demo section says how).

    SmolLM2's layer-7 hidden states have norms near 140 (Zephyr-7B's, for which the published
    c = 6.5 was tuned, are near 3), so the learning rate is scaled up from 5e-5. RMU keeps the
    published c = 6.5 on purpose: below the layer's norm, its forget loss does not converge (the
    paper's claim 3); Adaptive RMU scales its coefficient to the norm. Pads are masked: with left
    padding the first position is a pad, and this model's first position carries a hidden state of
    norm ~800 that would dominate both losses.
    """

    layer: int = 7
    steps: int = 75  # all 300 forget documents once, in batches of 4
    batch_size: int = 4
    max_len: int = 128
    lr: float = 3e-3
    alpha: float = 300.0
    steering_coeff: float = 6.5  # RMU, the published value
    beta: float = 2.0  # Adaptive RMU, first-batch rule
    mask_padding: bool = True
    scoring: str = "completion"  # "The chemical symbol of iron is" -> " Fe"; see rmu.eval.prompts
    question_limit: int | None = None
    seed: int = 42


DEFAULT = DemoSettings()
QUICK = DemoSettings(steps=40, question_limit=24)


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
        config = make_config(dict(
            model=str(model_dir), forget={topic_spec.forget_name: str(paths["forget_corpus"])},
            retain=[str(paths["retain_corpus"])], method=method, layer=settings.layer, steps=settings.steps,
            batch_size=settings.batch_size, max_len=settings.max_len, retain_max_len=settings.max_len,
            min_len=0, lr=settings.lr, alpha=settings.alpha, steering_coeff=settings.steering_coeff,
            beta=settings.beta, mask_padding=settings.mask_padding, seed=settings.seed, device="cpu",
        ))
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
