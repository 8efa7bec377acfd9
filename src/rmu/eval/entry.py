"""The one entry of evaluation: :func:`evaluate` checks the options and hands the tasks to a backend.

``native`` (:mod:`rmu.eval.native`) scores on the model in memory; ``lm-eval``
(:mod:`rmu.eval.lm_eval_backend`) runs lm-evaluation-harness on the same model. Both use the
prompts of :mod:`rmu.eval.prompts` and decide by :mod:`rmu.eval.scoring`.
"""

from __future__ import annotations

from pathlib import Path

from rmu.eval import lm_eval_backend
from rmu.eval.native import evaluate_native
from rmu.eval.prompts import check_scoring
from rmu.eval.results import TaskResult
from rmu.eval.tasks import Task, as_task_list, load_task

BACKENDS = ("native", "lm-eval")


def check_backend(backend: str, scoring: str) -> None:
    """A ValueError naming the fix when ``backend`` is unknown or cannot run ``scoring``."""
    check_scoring(scoring)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "lm-eval" and scoring == "completion":
        raise ValueError("completion scoring runs on the native backend only; use --backend native")


def resolve_tasks(tasks, backend: str = "native", subject: str = "") -> list[Task | str]:
    """Load every task now (before any model), as ``backend`` reads them.

    The lm-eval backend also takes the harness's own task names (``wmdp_bio``, ``lm-eval:mmlu``),
    kept as strings. Raises UnknownTaskError, FileNotFoundError or TaskFormatError naming the task.
    """
    if backend == "lm-eval":
        return [lm_eval_backend.resolve(item, subject) for item in as_task_list(tasks)]
    return [load_task(item, subject=subject) for item in as_task_list(tasks)]


def evaluate(model, tokenizer, tasks, scoring: str = "letter", batch_size: int = 8,
             limit: int | None = None, progress: bool = True, backend: str = "native",
             max_length: int | None = None, task_dir: str | Path | None = None) -> dict[str, TaskResult]:
    """Evaluate an in-memory model on multiple-choice tasks; returns ``{task name: TaskResult}``.

    ``tasks``: a :class:`~rmu.eval.tasks.Task`, a task name (``mmlu``, ``mmlu_virology``, ...) or
    file path, or a list of them. ``scoring``: ``letter``, ``cloze`` or ``completion`` (see
    :mod:`rmu.eval.prompts`). ``limit``: only the first N questions of each task. ``backend``:
    ``native`` or ``lm-eval`` (lm-evaluation-harness; it also runs the harness's own tasks by name,
    e.g. ``wmdp_bio``, and keeps the task files it writes in ``task_dir`` when given). The model is
    not copied or reloaded.
    """
    check_backend(backend, scoring)
    if backend == "lm-eval":
        return lm_eval_backend.evaluate_with_lm_eval(model, tokenizer, tasks, scoring, batch_size, limit,
                                                     progress, max_length, task_dir=task_dir)
    if task_dir is not None:
        raise ValueError("task_dir (--lm-eval-task-dir) is for the lm-eval backend only")
    return evaluate_native(model, tokenizer, tasks, scoring, batch_size, limit, progress, max_length)
