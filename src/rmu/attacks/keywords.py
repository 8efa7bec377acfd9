"""Forget-keyword robustness: retain questions with a forget-topic keyword inserted.

The follow-up paper (arXiv 2501.19202) observes that an RMU model treats a retain question as
forget input as soon as a forget keyword appears in it, and proposes random noise augmentation
(``--noise`` in ``rmu unlearn``). Here each retain question gets one sentence naming a forget
keyword placed before it (``"{keyword} is a chemical element. The capital of France is"``), with
the keyword drawn per question by a seeded generator; the accuracy on the original and on the
keyworded questions is compared across models (e.g. trained with and without ``--noise``).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

from rmu.progress import bar as tqdm

from rmu.attacks.common import (
    AttackError, accuracy, as_models, check_scoring, describe_models, load_questions, write_json,
)
from rmu.outputs import writes_folder
from rmu.tasks import Task

RESULT_FILE = "keywords.json"
DEFAULT_TEMPLATE = "{keyword} is a chemical element."


def insert_keywords(task: Task, keywords: Sequence[str], template: str = DEFAULT_TEMPLATE, seed: int = 0,
                    position: str = "before") -> Task:
    """A copy of ``task`` whose questions carry one keyword sentence (before or after the question)."""
    keywords = [k.strip() for k in keywords if k and k.strip()]
    if not keywords:
        raise AttackError("give at least one keyword")
    if "{keyword}" not in template:
        raise AttackError("the template must contain {keyword}")
    if position not in ("before", "after"):
        raise AttackError("position must be 'before' or 'after'")
    rng = random.Random(seed)
    questions = []
    for question in task.questions:
        sentence = template.format(keyword=rng.choice(keywords))
        text = question.question.strip()
        text = f"{sentence} {text}" if position == "before" else f"{text} ({sentence})"
        questions.append(dataclasses.replace(question, question=text))
    return Task(f"{task.name}+keywords", questions)


def read_keywords(source) -> list[str]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AttackError(f"keyword file {path} does not exist (one keyword a line)")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(source)


@writes_folder("attack keywords", inputs=("models", "retain_questions", "keywords"))
def keyword_attack(models: dict, retain_questions, keywords, output: str | Path | None = None, *,
                   template: str = DEFAULT_TEMPLATE, position: str = "before", seed: int = 0,
                   scoring: str = "cloze", limit: int | None = None, progress: bool = True,
                   plot: bool = True) -> dict:
    """Retain accuracy with and without a forget keyword for each model.

    ``keywords``: a file (one a line) or a list, e.g. element names.
    """
    check_scoring(scoring)
    task = load_questions(retain_questions, limit)
    keywords = read_keywords(keywords)
    keyworded = insert_keywords(task, keywords, template, seed, position)
    data = {"kind": "keywords",
            "settings": {"template": template, "position": position, "seed": seed, "scoring": scoring,
                         "questions": task.name, "count": len(task), "keywords": len(keywords),
                         "models": describe_models(models), "example": keyworded.questions[0].question},
            "models": {}}
    for name, (model, tokenizer) in tqdm(as_models(models).items(), desc="keywords", disable=not progress,
                                         unit="model"):
        plain = accuracy(model, tokenizer, task, scoring)
        with_keyword = accuracy(model, tokenizer, keyworded, scoring)
        data["models"][name] = {"retain": plain, "retain_with_keyword": with_keyword, "drop": plain - with_keyword}
    if output is not None:
        output = Path(output)
        write_json(output / RESULT_FILE, data)
        if plot:
            from rmu.attacks import plots

            plots.save_figure(plots.plot_keywords(data), output / "keywords.png")
    return data
