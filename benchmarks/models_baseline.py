"""Baselines for docs/models.md: the demo's fixed settings on one demo model and topic, plus the
forget-keyword attack on the retain questions, for the base and each unlearned model.

    nice -n 10 python benchmarks/models_baseline.py --model gemma3-270m --topic animals \\
        --output runs/models/gemma3-270m-animals

Runs exactly ``rmu demo --model M --topic T --output OUT`` (the same settings, seed and numbers;
``rmu.demo.run.DEFAULT``: layer 7, 75 steps, lr 3e-3, alpha 300, RMU c 6.5, Adaptive RMU beta 2)
and adds to each model's scores in ``OUT/results.json``: ``retain_with_keyword``, the retain
accuracy when one sentence naming a forget item stands before each question (the existing
``rmu.attacks.keywords.insert_keywords``, position "before", seed 0), with the names of the forget
corpus's items as keywords.
"""

from __future__ import annotations

import argparse
import dataclasses

from rmu.attacks.keywords import insert_keywords
from rmu.demo.model import DEMO_MODELS
from rmu.demo.run import DEFAULT, run_demo
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=list(DEMO_MODELS), required=True)
    parser.add_argument("--topic", choices=list(TOPICS), required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--no-keywords", action="store_true", help="Only the demo's numbers.")
    args = parser.parse_args()
    settings = dataclasses.replace(DEFAULT)
    extra = None if args.no_keywords else keyword_measure(TEMPLATES[args.topic], settings.scoring)
    run_demo(args.output, settings=settings, model=args.model, topic=args.topic, extra_measure=extra)


if __name__ == "__main__":
    main()
