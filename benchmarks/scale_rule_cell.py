"""One "scale rule, no search" cell of docs/tuning.md section 4: a demo model on a demo topic,
unlearned with the settings `--auto all` calibrates, scored on both halves of the questions.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/scale_rule_cell.py --model smollm2 --topic animals \\
        --output runs/scale-rule/smollm2-animals

The protocol of the SmolLM2/elements rows of docs/tuning.md: the topic's files as
``rmu demo --topic T --data-only`` writes them (``rmu.demo.write_topic``, seed 0); each question
file split by ``rmu.tune.split_halves`` (seed 0) into the half a tuner would see and the held-out
half; the demo's layer, batches, padding and seed (``rmu.demo.settings.DEFAULT.run_options()``:
layer 7, layers 5-7 updated, up to 75 steps of 4 x 128 tokens, pads masked, min-len 0, seed 42,
CPU); ``--auto all`` (lr, alpha and the coefficient from ``rmu.scale``'s calibration);
completion scoring and perplexity on the topic's general text, for the base model and after each
method (every method starts from the base weights). One model is loaded once.

Writes ``OUTPUT/results.json`` (``results.partial.json`` while running): the base and each
method's scores per half, the settings the rule chose, the calibration, the health report, minutes.
``--lr X`` replaces only the rule's lr (alpha and the coefficient still calibrated): the rows of
docs/tuning.md that follow the health report's advice ("raise --lr about 3x"); ``--alpha X`` likewise
replaces only the rule's alpha. ``--beta`` /
``--steering-coeff`` replace the rule's coefficient the same way (lr and alpha still calibrated for
it); ``--params``, ``--mask-first-token``, ``--loss-dims``, ``--layer``, ``--steps``, ``--seed`` and ``--auto-lr``
change the run as the ``rmu unlearn`` options of those names do; ``--skip-base`` scores only the unlearned models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rmu import make_config, unlearn
from rmu.demo.model import DEMO_MODELS, model_path
from rmu.demo.settings import DEFAULT
from rmu.demo.topics import TOPICS, demo_topic, write_topic
from rmu.eval import evaluate, perplexity
from rmu.eval.tasks import load_task_file
from rmu.loading import load_model
from rmu.tune import split_halves


def score(model, tokenizer, halves: dict, general_text: list[str]) -> dict:
    """Accuracy of each question half (completion scoring) and perplexity on the general text."""
    tasks = [task for pair in halves.values() for task in pair]
    results = evaluate(model, tokenizer, tasks, scoring="completion", progress=False)
    scores = {}
    for role, (tuning, held_out) in halves.items():
        scores[f"{role}_tuning"] = results[tuning.name].accuracy
        scores[f"{role}_held_out"] = results[held_out.name].accuracy
    scores["perplexity"] = perplexity(model, tokenizer, general_text, progress=False)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=list(DEMO_MODELS), required=True)
    parser.add_argument("--topic", choices=list(TOPICS), required=True)
    parser.add_argument("--methods", default="adaptive", help="Comma-separated: adaptive, rmu (default adaptive).")
    parser.add_argument("--lr", type=float, default=None,
                        help="A fixed lr instead of the rule's (alpha and the coefficient still calibrated), "
                             "e.g. to follow the health report's advice.")
    parser.add_argument("--alpha", type=float, default=None, help="A fixed alpha instead of the rule's.")
    parser.add_argument("--beta", type=float, default=None, help="Adaptive RMU: a fixed beta instead of the rule's.")
    parser.add_argument("--steering-coeff", type=float, default=None, help="RMU: a fixed c instead of the rule's.")
    parser.add_argument("--params", default="mlp-out", help="Weights trained, as rmu unlearn --params (default mlp-out).")
    parser.add_argument("--mask-first-token", action="store_true", help="Drop each row's first token from the losses.")
    parser.add_argument("--loss-dims", choices=["all", "informative", "forget-informative"], default="all",
                        help="Dimensions the losses use, as rmu unlearn --loss-dims (default all).")
    parser.add_argument("--layer", type=int, default=DEFAULT.layer)
    parser.add_argument("--steps", type=int, default=DEFAULT.steps)
    parser.add_argument("--control-vectors", default=None, help="A control_vectors.safetensors to use, as rmu unlearn's.")
    parser.add_argument("--seed", type=int, default=DEFAULT.seed, help="Run seed (default: the demo's).")
    parser.add_argument("--auto-lr", choices=["steps", "sign-step"], default="steps",
                        help="How --auto lr calibrates, as rmu unlearn --auto-lr (default steps).")
    parser.add_argument("--skip-base", action="store_true", help="Do not score the base model.")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not set(methods) <= {"adaptive", "rmu"} or not methods:
        parser.error(f"--methods {args.methods!r}: use adaptive, rmu or adaptive,rmu")

    output = Path(args.output)
    if (output / "results.json").exists():  # never mix a new run with an old one's results
        parser.error(f"{output / 'results.json'} exists: choose a new --output (or remove that file)")
    output.mkdir(parents=True, exist_ok=True)
    topic = demo_topic(args.topic)
    paths = write_topic(args.topic, output / "data")
    general_text = paths["general_text"].read_text(encoding="utf-8").splitlines()
    halves = {role: split_halves(load_task_file(paths[f"{role}_questions"], name=f"{role}_questions"), seed=0)
              for role in ("forget", "retain")}
    model_dir = model_path(args.model)
    model, tokenizer = load_model(model_dir)

    results = {"model": str(model_dir), "topic": args.topic,
               "questions": {f"{role}_{half}": len(task.questions) for role, pair in halves.items()
                             for half, task in zip(("tuning", "held_out"), pair)},
               "runs": {}}
    partial = output / "results.partial.json"
    if not args.skip_base:
        print("scoring the base model ...", flush=True)
        started = time.perf_counter()
        results["runs"]["base"] = {"scores": score(model, tokenizer, halves, general_text),
                                   "minutes": round((time.perf_counter() - started) / 60, 1)}
        partial.write_text(json.dumps(results, indent=2))
    for method in methods:
        fixed = {"lr": args.lr, "alpha": args.alpha, "beta": args.beta if method == "adaptive" else None,
                 "steering_coeff": args.steering_coeff if method == "rmu" else None}
        fixed = {key: value for key, value in fixed.items() if value is not None}
        auto = [name for name, key in (("lr", "lr"), ("alpha", "alpha"), ("coeff", "beta" if method == "adaptive"
                else "steering_coeff")) if key not in fixed]
        print(f"unlearning with {method}, --auto {','.join(auto)}, fixed {fixed} ...", flush=True)
        started = time.perf_counter()
        config = make_config(dict(
            model=str(model_dir), forget={topic.forget_name: str(paths["forget_corpus"])},
            retain=[str(paths["retain_corpus"])], method=method,
            **dict(DEFAULT.run_options(), layer=args.layer, steps=args.steps, seed=args.seed),
            auto_lr=args.auto_lr,
            mask_first_token=args.mask_first_token, params=args.params.split(","), loss_dims=args.loss_dims,
            control_vectors=args.control_vectors, auto=auto, **fixed))
        result = unlearn(config, model=model, tokenizer=tokenizer, progress=True)
        scores = score(model, tokenizer, halves, general_text)
        used = result.config
        results["runs"][f"rule-{method}" + "".join(f"-{key}{value:g}" for key, value in fixed.items())] = {
            "scores": scores,
            "settings": {"seed": used.seed, "auto_lr": used.auto_lr, "lr": used.lr, "alpha": used.alpha, "beta": used.beta, "steering_coeff": used.steering_coeff,
                         "params": used.params, "mask_first_token": used.mask_first_token, "layer": used.layer,
                         "loss_dims": used.loss_dims, "massive_dims": result.loss_dims,
                         "coefficients": result.coefficients, "steps_run": len(result.records)},
            "calibration": result.calibration, "health": result.health,
            "unlearn_seconds": round(result.seconds, 1),
            "minutes": round((time.perf_counter() - started) / 60, 1)}
        partial.write_text(json.dumps(results, indent=2, default=str))
        result.restore_original()  # the next method starts from the base weights
    (output / "results.json").write_text(json.dumps(results, indent=2, default=str))
    partial.unlink()
    for name, run in results["runs"].items():
        print(name, json.dumps(run["scores"]), (run.get("health") or {}).get("verdict"), flush=True)


if __name__ == "__main__":
    main()
