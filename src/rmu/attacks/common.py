"""What the attacks share beyond :mod:`rmu.experiments.base`: the settings every attack has,
question tasks, the evaluator's accuracy, and the inputs the Python API may pass in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field

from rmu.experiments.base import IN_MEMORY, Experiment, ExperimentError, NamedModels, Settings, write_json  # noqa: F401
from rmu.eval import SCORINGS, evaluate
from rmu.eval.tasks import Task, load_task

__all__ = ["Attack", "AttackError", "AttackSettings", "Scoring", "load_questions", "accuracy", "mean", "write_json",
           "split_input", "split_questions", "with_facts", "as_list"]


# One error class for every experiment (analyses, sweeps, attacks); the old name stays.
AttackError = ExperimentError

Scoring = Literal[SCORINGS]  # how the evaluator scores a question (rmu.eval.prompts)


class AttackSettings(Settings):
    """What every attack has: the models attacked and the questions asked of them."""

    models: NamedModels = Field(description="A checkpoint folder to attack, e.g. base=PATH and unlearned=PATH "
                                            "(repeat).",
                                json_schema_extra={"cli": "--model", "metavar": "NAME=PATH", "path": "dir"})
    questions: str = Field(description="Forget questions (a task name or file).",
                           json_schema_extra={"metavar": "NAME_OR_FILE", "input": True})
    limit: int | None = Field(None, ge=1, description="Only the first N questions.")

    def task(self, given: Task | None = None) -> Task:
        """The questions: ``given`` (a Task the Python API passed) or the named task or file, cut to ``limit``."""
        return load_questions(self.questions if given is None else given, self.limit)


class Attack(Experiment):
    """An attack: the command ``rmu attack <kind>``; its figure ``<kind>.png`` is ``rmu.attacks.plots.plot_<kind>``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.command = f"attack {cls.kind}"
        cls.figure_files = (f"{cls.kind}.png",)

    def figures(self, data: dict) -> dict:
        from rmu.attacks import plots

        return {self.figure_files[0]: getattr(plots, f"plot_{self.kind}")(data)}


def split_input(value: Any, what: str = "texts") -> tuple[str | None, Any]:
    """A Python-API argument as (its settings value, the in-memory object or None).

    A path stays a path (the attack reads it); a :class:`Task` travels in memory under its name, a
    list of texts counted, anything else (a tensor, a dict of tensors) as ``"in memory"``.
    """
    if value is None or isinstance(value, (str, Path)):
        return (None if value is None else str(value)), None
    if isinstance(value, Task):
        return value.name, value
    if isinstance(value, (list, tuple)):
        return f"{len(value)} {what}", list(value)
    return IN_MEMORY, value


def split_questions(questions: Any) -> tuple[str, Task | None]:
    """:func:`split_input` for a question task (name, file or Task; a list holding one of them)."""
    if isinstance(questions, (list, tuple)):
        if len(questions) != 1:
            raise AttackError("give exactly one question task")
        questions = questions[0]
    return split_input(questions)


def as_list(value: Any) -> Any:
    """One value -> a list of it (a field that takes a list also takes one item from the Python API)."""
    return [value] if isinstance(value, (str, Path)) else value


def with_facts(settings: Settings, **facts) -> dict:
    """The settings as saved, with facts about the inputs (how many questions, documents ...)."""
    return {**settings.saved(), **facts}


def load_questions(questions, limit: int | None = None, subject: str = "") -> Task:
    """One task (name, file or Task; a list holding one), cut to its first ``limit`` questions."""
    name, given = split_questions(questions)
    try:
        task = load_task(name if given is None else given, subject=subject).head(limit)
    except (FileNotFoundError, ValueError) as error:
        raise AttackError(f"questions {name}: {error}") from None
    if not task.questions:
        raise AttackError(f"questions {name}: no questions")
    return task


def accuracy(model, tokenizer, task: Task, scoring: str = "cloze", batch_size: int = 8) -> float:
    """The evaluator's accuracy of ``model`` on ``task`` (no progress bar: attacks show their own)."""
    return evaluate(model, tokenizer, task, scoring=scoring, batch_size=batch_size, progress=False)[task.name].accuracy


def mean(values: Sequence[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
