"""What every attack shares: model sources, question tasks, accuracy, result files."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rmu.analysis.common import AnalysisError, model_or_path, write_json
from rmu.experiments.base import ExperimentError
from rmu.eval import SCORINGS, evaluate
from rmu.eval.tasks import Task, load_task

__all__ = ["AttackError", "as_models", "load_questions", "accuracy", "write_json", "describe_models"]


# One error class for every experiment (analyses, sweeps, attacks); the old name stays.
AttackError = ExperimentError


def as_models(models: dict) -> dict:
    """name -> (model, tokenizer), loading checkpoint paths; ``models`` maps name -> path or pair."""
    if not models:
        raise AttackError("give at least one model")
    loaded = {}
    for name, source in models.items():
        try:
            loaded[name] = model_or_path(*source) if isinstance(source, tuple) else model_or_path(source)
        except AnalysisError as error:
            raise AttackError(f"model {name!r}: {error}") from None
    return loaded


def describe_models(models: dict) -> dict:
    return {n: str(m) if isinstance(m, (str, Path)) else "in memory" for n, m in models.items()}


def load_questions(questions, limit: int | None = None, subject: str = "") -> Task:
    """One task (name, file or Task), cut to its first ``limit`` questions."""
    if isinstance(questions, (list, tuple)):
        if len(questions) != 1:
            raise AttackError("give exactly one question task")
        questions = questions[0]
    try:
        task = load_task(questions, subject=subject).head(limit)
    except (FileNotFoundError, ValueError) as error:
        raise AttackError(f"questions {questions!s}: {error}") from None
    if not task.questions:
        raise AttackError(f"questions {questions!s}: no questions")
    return task


def check_scoring(scoring: str) -> None:
    if scoring not in SCORINGS:
        raise AttackError(f"unknown scoring {scoring!r}; use one of {', '.join(SCORINGS)}")


def accuracy(model, tokenizer, task: Task, scoring: str = "cloze", batch_size: int = 8) -> float:
    """The evaluator's accuracy of ``model`` on ``task`` (no progress bar: attacks show their own)."""
    return evaluate(model, tokenizer, task, scoring=scoring, batch_size=batch_size, progress=False)[task.name].accuracy


def mean(values: Sequence[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
