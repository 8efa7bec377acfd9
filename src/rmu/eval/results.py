"""Evaluation results: per-question predictions, per-task accuracy, the table and the JSON file.

The results file is ``{"written_by": "rmu eval", "metadata": {...}, "results": {task: TaskResult}}``;
``written_by`` marks a file rmu may replace (:func:`rmu.outputs.check_file`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from rmu.outputs import write_atomic

RESULTS_WRITER = "rmu eval"  # marks a results file rmu may replace (rmu.outputs.check_file)


@dataclass
class Prediction:
    """The model's answer to one question."""

    index: int
    predicted: int
    answer: int
    correct: bool
    loglikelihoods: list[float]


@dataclass
class TaskResult:
    """Accuracy on one task, with its standard error and per-question predictions."""

    task: str
    scoring: str
    accuracy: float
    stderr: float | None  # None below two questions
    count: int
    chance: float
    backend: str = "native"
    predictions: list[Prediction] = field(default_factory=list)

    @classmethod
    def from_predictions(cls, task: str, scoring: str, predictions: list[Prediction],
                         choice_counts: Iterable[int], backend: str = "native") -> "TaskResult":
        counts = list(choice_counts)
        n = len(predictions)
        accuracy = sum(p.correct for p in predictions) / n if n else float("nan")
        return cls(
            task=task, scoring=scoring, accuracy=accuracy, stderr=accuracy_stderr(accuracy, n),
            count=n, chance=sum(1 / c for c in counts) / len(counts) if counts else float("nan"),
            backend=backend, predictions=predictions,
        )

    def to_dict(self, with_predictions: bool = True) -> dict:
        data = asdict(self)
        if not with_predictions:
            data.pop("predictions")
        return data


def accuracy_stderr(accuracy: float, n: int) -> float | None:
    """Standard error of a mean of 0/1 outcomes, sqrt(p(1-p)/(n-1)), as lm-eval reports it."""
    if n < 2:
        return None
    return math.sqrt(accuracy * (1 - accuracy) / (n - 1))


def format_table(results: dict[str, TaskResult]) -> str:
    """A short plain-text table: task, scoring, n, accuracy +- stderr, chance."""
    rows = [("task", "scoring", "n", "accuracy", "stderr", "chance")]
    for result in results.values():
        stderr = f"{result.stderr:.4f}" if result.stderr is not None else "-"
        rows.append((result.task, result.scoring, str(result.count), f"{result.accuracy:.4f}", stderr,
                     f"{result.chance:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def save_results(results: dict[str, TaskResult], path: str | Path, **metadata) -> Path:
    """Write ``{"written_by": "rmu eval", "metadata": ..., "results": {task: TaskResult as dict}}`` as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"written_by": RESULTS_WRITER, "metadata": metadata,
               "results": {name: r.to_dict() for name, r in results.items()}}
    write_atomic(path, json.dumps(payload, indent=2) + "\n")
    return path
