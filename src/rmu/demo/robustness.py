"""Every attack on the demo benchmark's SmolLM2 models: what ``docs/robustness.md`` reports.

``python -m rmu.demo.robustness OUTPUT`` (or :func:`run`) builds, in memory and from the same base
weights, the base model, RMU, Adaptive RMU, and both again with random noise augmentation
(``noise``), with exactly the unlearning settings of ``rmu demo`` (:class:`Settings` extends
:class:`rmu.demo.settings.DemoSettings`), then runs each attack with small CPU budgets, scoring
questions the way the demo does (``completion``: the base model knows these answers), and writes
each attack's JSON and PNG into OUTPUT. Stages already written are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rmu.attacks import ablate_attack, gcg_attack, keyword_attack, probe_attack, relearn_attack
from rmu.attacks.keywords import DEFAULT_TEMPLATE
from rmu.demo.benchmark import build_benchmark, write_benchmark
from rmu.demo.model import smollm2_path
from rmu.demo.settings import DemoSettings
from rmu.engine import unlearn
from rmu.eval.tasks import load_task_file
from rmu.loading import load_model


@dataclass(frozen=True)
class Settings(DemoSettings):
    """The demo's unlearning settings (inherited, scoring included) plus the attacks' budgets."""

    noise: float = 1.0  # random noise augmentation (the follow-up paper), for the keyword attack
    # attacks
    gcg_questions: int = 10
    gcg_steps: int = 10
    gcg_candidates: int = 32
    gcg_tokens: int = 10
    relearn_k: int = 8
    relearn_steps: int = 20
    relearn_eval_every: int = 5
    relearn_lr: float = 3e-5
    relearn_questions: int = 50
    ablate_questions: int = 50


def build_models(settings: Settings, data: Path, progress: bool = True, model_dir: str | Path | None = None):
    """{"base", "rmu", "adaptive", "rmu+noise", "adaptive+noise"} -> (model, tokenizer), and control vectors."""
    folder = Path(model_dir) if model_dir else smollm2_path(progress=progress)
    model, tokenizer = load_model(folder)
    paths = write_benchmark(data, build_benchmark(seed=0))
    models, vectors, runs = {"base": (copy.deepcopy(model), tokenizer)}, {}, {}
    for name, method, noise in (("rmu", "rmu", 0.0), ("adaptive", "adaptive", 0.0),
                                ("rmu+noise", "rmu", settings.noise), ("adaptive+noise", "adaptive", settings.noise)):
        config = settings.unlearn_config(folder, {"elements": str(paths["forget_corpus"])},
                                         [str(paths["retain_corpus"])], method=method, noise=noise)
        result = unlearn(config, model=model, tokenizer=tokenizer, progress=progress)
        models[name] = (copy.deepcopy(model), tokenizer)
        vectors[name] = result.control_vectors["elements"].clone()
        runs[name] = {"seconds": round(result.seconds, 1), "coefficients": result.coefficients,
                      "final_forget_loss": result.records[-1]["forget_loss"],
                      "final_retain_loss": result.records[-1]["retain_loss"]}
        result.restore_original()
    return models, vectors, paths, runs


def run(output: str | Path, settings: Settings = Settings(), progress: bool = True,
        model_dir: str | Path | None = None) -> dict:
    """Every attack into ``output``; returns the seconds per stage. ``model_dir`` replaces SmolLM2 (tests)."""
    torch.set_num_threads(1)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    timings = {}
    started = time.perf_counter()
    models, vectors, paths, runs = build_models(settings, output / "data", progress, model_dir)
    timings["unlearning"] = time.perf_counter() - started
    (output / "settings.json").write_text(json.dumps({"settings": asdict(settings), "runs": runs}, indent=2))
    forget = load_task_file(paths["forget_questions"], name="forget_questions")
    retain = load_task_file(paths["retain_questions"], name="retain_questions")
    benchmark = build_benchmark(seed=0)
    main = {k: models[k] for k in ("base", "rmu", "adaptive")}
    unlearned = {k: models[k] for k in ("rmu", "adaptive")}

    def stage(name, function):
        if (output / name / f"{name}.json").exists():
            return
        begin = time.perf_counter()
        function(output / name)
        timings[name] = time.perf_counter() - begin
        print(f"[{name}] {timings[name]:.0f} s", flush=True)
        (output / "timings.json").write_text(json.dumps(timings, indent=2))

    def scores(out):
        from rmu.attacks.common import accuracy, write_json

        write_json(out / "scores.json", {name: {"forget": accuracy(m, t, forget, settings.scoring),
                                                "retain": accuracy(m, t, retain, settings.scoring)}
                                         for name, (m, t) in models.items()})

    stage("scores", scores)
    stage("keywords", lambda out: keyword_attack(models, retain, benchmark.forget_taught, out, scoring=settings.scoring,
                                                     template=DEFAULT_TEMPLATE, progress=progress))
    stage("probe", lambda out: probe_attack(main, forget, out, prompt=settings.scoring, progress=progress))
    stage("ablate", lambda out: ablate_attack(
        unlearned, forget, out, layer=settings.layer, base=main["base"], forget_texts=str(paths["forget_corpus"]),
        control_vectors={k: vectors[k] for k in unlearned}, retain_questions=retain,
        limit=settings.ablate_questions, scoring=settings.scoring, progress=progress))
    stage("relearn", lambda out: relearn_attack(
        unlearned, forget, str(paths["forget_corpus"]), benchmark.general_text, out, k=settings.relearn_k,
        steps=settings.relearn_steps, lr=settings.relearn_lr, eval_every=settings.relearn_eval_every,
        limit=settings.relearn_questions, scoring=settings.scoring, progress=progress))
    stage("gcg", lambda out: gcg_attack(
        main, forget, out, n_tokens=settings.gcg_tokens, steps=settings.gcg_steps, candidates=settings.gcg_candidates,
        batch_size=settings.gcg_candidates, limit=settings.gcg_questions, scoring=settings.scoring,
        progress=progress))
    timings["total"] = time.perf_counter() - started
    (output / "timings.json").write_text(json.dumps(timings, indent=2))
    return timings


def main(argv: list[str] | None = None) -> None:
    """``python -m rmu.demo.robustness [OUTPUT]`` (default ``robustness-results``)."""
    argv = sys.argv[1:] if argv is None else argv
    run(argv[0] if argv else "robustness-results")


if __name__ == "__main__":
    main()
