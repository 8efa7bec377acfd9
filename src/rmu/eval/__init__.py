"""Multiple-choice evaluation of a causal LM held in memory, by log-likelihood, zero-shot.

One module per concept, imported in this order (each imports only those above it, never back):

- :mod:`rmu.eval.tasks` -- questions and tasks: file formats, the named offline MMLU tasks;
- :mod:`rmu.eval.prompts` -- the prompt and continuations of each scoring (letter, cloze, completion);
- :mod:`rmu.eval.results` -- predictions, per-task results, the table and the results JSON;
- :mod:`rmu.eval.scoring` -- the decision rule (log-likelihood, or per character) and the result it gives;
- :mod:`rmu.eval.native` -- the native backend: batched log-likelihoods, perplexity;
- :mod:`rmu.eval.lm_eval_backend` -- the same tasks through lm-evaluation-harness;
- :mod:`rmu.eval.entry` -- :func:`evaluate`, the one entry, which picks the backend.

Until release 0.2, ``rmu.evaluate``, ``rmu.tasks`` and ``rmu.lm_eval_backend`` re-export these names.
"""

from rmu.eval.entry import BACKENDS, check_backend, evaluate, resolve_tasks
from rmu.eval.native import encode_pair, loglikelihoods, perplexity, score_task
from rmu.eval.prompts import SCORINGS, prompt_and_continuations
from rmu.eval.results import RESULTS_WRITER, Prediction, TaskResult, format_table, save_results
from rmu.eval.scoring import choice_scores
from rmu.eval.tasks import Question, Task, TaskFormatError, UnknownTaskError, load_task, load_task_file

__all__ = [
    "BACKENDS", "RESULTS_WRITER", "SCORINGS", "Prediction", "Question", "Task", "TaskFormatError", "TaskResult",
    "UnknownTaskError", "check_backend", "choice_scores", "encode_pair", "evaluate", "format_table",
    "load_task", "load_task_file", "loglikelihoods", "perplexity", "prompt_and_continuations",
    "resolve_tasks", "save_results", "score_task",
]
