"""Baselines for docs/models.md: the demo's fixed settings on one demo model and topic, plus the
forget-keyword attack on the retain questions, for the base and each unlearned model.

    nice -n 10 python benchmarks/models_baseline.py --model gemma3-270m --topic animals \\
        --output runs/models/gemma3-270m-animals

Then ``python benchmarks/models_baseline.py --summarize runs/models/*`` prints the table of
docs/models.md and writes ``docs/models.json`` (every run's results).

Runs exactly ``rmu demo --model M --topic T --output OUT`` (the same settings, seed and numbers:
``rmu.demo.settings.DEFAULT``) and adds to each model's scores in ``OUT/results.json``:
``retain_with_keyword``, the retain accuracy when one sentence naming a forget item stands before
each question (the existing ``rmu.attacks.keywords.insert_keywords``, position "before", seed 0),
with the names of the forget corpus's items as keywords.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rmu.attacks.keywords import insert_keywords
from rmu.demo.model import DEMO_MODELS
from rmu.demo.run import run_demo
from rmu.demo.settings import DEFAULT
from rmu.demo.topics import TOPICS
from rmu.evaluate import evaluate
from rmu.tasks import Task, question_from_record

# One keyword sentence per topic, as the robustness study wrote it for the elements.
TEMPLATES = {"elements": "{keyword} is a chemical element.", "animals": "The {keyword} is an animal."}


def keyword_measure(template: str, scoring: str):
    def measure(model, tokenizer, benchmark) -> dict:
        task = Task("retain_questions", [question_from_record(record, f"question {i}")
                                         for i, record in enumerate(benchmark.retain_questions)])
        keyworded = insert_keywords(task, benchmark.forget_taught, template, seed=0, position="before")
        result = evaluate(model, tokenizer, keyworded, scoring=scoring, progress=False)
        return {"retain_with_keyword": result[keyworded.name].accuracy, "keyword_template": template,
                "keyword_example": keyworded.questions[0].question}

    return measure


NAMES = {"base": "base", "rmu": f"RMU c {DEFAULT.steering_coeff:g}", "adaptive": f"Adaptive RMU beta {DEFAULT.beta:g}"}


def summarize(folders: list[str], json_path: Path) -> str:
    """A markdown table of the runs' results (rows named by run folder; a run stopped part way is
    read from its ``results.partial.json`` and marked); all results saved to ``json_path``."""
    runs = {}
    lines = ["| run (model-topic) | setting | forget acc | retain acc | retain acc with keyword | perplexity | "
             "coefficient | unlearning time |", "|---|---|---|---|---|---|---|---|"]
    for folder in map(Path, folders):
        complete = (folder / "results.json").exists()
        results = json.loads((folder / ("results.json" if complete else "results.partial.json")).read_text())
        runs[folder.name] = results | {"complete": complete}
        for key, scores in results["models"].items():
            keyword = scores.get("retain_with_keyword")
            coefficient, seconds = "-", "-"
            if key != "base":
                coefficients = json.loads((folder / f"run_{key}.json").read_text())["coefficients"]
                coefficient = ", ".join("-" if v is None else f"{v:.4g}" for v in coefficients.values())
                seconds = f"{scores['unlearn_seconds']:.0f} s"
            name = folder.name if complete else f"{folder.name} (stopped part way)"
            lines.append(f"| {name} | {NAMES[key]} | {scores['forget_accuracy']:.3f} | "
                         f"{scores['retain_accuracy']:.3f} | {'-' if keyword is None else f'{keyword:.3f}'} | "
                         f"{scores['general_perplexity']:.2f} | {coefficient} | {seconds} |")
    json_path.write_text(json.dumps(runs, indent=2) + "\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=list(DEMO_MODELS))
    parser.add_argument("--topic", choices=list(TOPICS))
    parser.add_argument("--output")
    parser.add_argument("--no-keywords", action="store_true", help="Only the demo's numbers.")
    parser.add_argument("--adaptive-first", action="store_true",
                        help="Run Adaptive RMU before RMU (each starts from the base weights: same numbers).")
    parser.add_argument("--summarize", nargs="+", metavar="RUN_FOLDER", help="Print the table of these runs.")
    parser.add_argument("--json", default="docs/models.json", help="Where --summarize writes all results.")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize, Path(args.json)))
        return
    if not (args.model and args.topic and args.output):
        parser.error("give --model, --topic and --output (or --summarize RUN_FOLDER ...)")
    extra = None if args.no_keywords else keyword_measure(TEMPLATES[args.topic], DEFAULT.scoring)
    methods = ("adaptive", "rmu") if args.adaptive_first else ("rmu", "adaptive")
    run_demo(args.output, settings=DEFAULT, model=args.model, topic=args.topic, extra_measure=extra,
             methods=methods)


if __name__ == "__main__":
    main()
