"""Multiple-choice evaluation of a causal LM held in memory: prompts, batched scoring, results.

Two scorings, both zero-shot and both deciding by log-likelihood, as lm-evaluation-harness does:

``letter`` -- the prompt of lm-evaluation-harness's ``mmlu`` and ``wmdp_*`` tasks::

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    {question.strip()}\\n
    A. {choice 0}\\n
    B. {choice 1}\\n
    C. {choice 2}\\n
    D. {choice 3}\\n
    Answer:

  (written here on several lines; the ``\\n`` are the only line breaks). The continuations scored
  are `` A``, `` B``, `` C``, `` D`` (a space, then the letter); the prediction is the letter with
  the highest log-likelihood (lm-eval's ``acc``). The description line is left out when a
  question has no subject; tasks with more or fewer than four choices use as many letters.

``cloze`` -- the prompt of lm-eval's ``mmlu_*_continuation`` tasks::

    The following are questions (with answers) about {subject}.\\n\\n
    Question: {question.strip()}\\n
    Answer:

  and each answer text, after a space, as continuation. The prediction is the choice with the
  highest log-likelihood divided by the choice's length in characters (without the leading
  space): lm-eval's ``acc_norm``.

``completion`` -- for questions written as the start of a sentence ("The chemical symbol of iron
  is"): the question text alone is the context, each answer text (after a space) the
  continuation, decided per character as ``cloze``. Small models that fail the MMLU prompt often
  know such facts; the demo measures them this way. Native backend only.

Tokenisation follows lm-eval too: the context and context+continuation are encoded with the
tokenizer's defaults (a BOS token where the tokenizer adds one), and the continuation tokens are
what the second encoding has beyond the first. Sequences longer than the model's context are cut
on the left. Every distinct input is run once (the four letters share one forward pass), in
batches padded on the right, longest first; results do not depend on the batch size beyond float
rounding.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from rmu.progress import bar as tqdm

from rmu.tasks import LETTERS, Question, Task, load_task

SCORINGS = ("letter", "cloze", "completion")
BACKENDS = ("native", "lm-eval")
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when the config names no context length


# ---------------------------------------------------------------------------------------------
# Prompts


def letter_description(subject: str) -> str:
    if not subject:
        return ""
    return f"The following are multiple choice questions (with answers) about {subject}.\n\n"


def cloze_description(subject: str) -> str:
    return f"The following are questions (with answers) about {subject}.\n\n" if subject else ""


def letter_prompt(question: Question) -> str:
    """The zero-shot MMLU/WMDP prompt of lm-eval, ending in "Answer:"."""
    lines = [question.question.strip()]
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(question.choices)]
    return letter_description(question.subject) + "\n".join(lines) + "\nAnswer:"


def cloze_prompt(question: Question) -> str:
    return cloze_description(question.subject) + f"Question: {question.question.strip()}\nAnswer:"


def prompt_and_continuations(question: Question, scoring: str) -> tuple[str, list[str]]:
    """The context and the continuation of each choice (lm-eval's target delimiter is a space)."""
    if scoring == "letter":
        return letter_prompt(question), [f" {LETTERS[i]}" for i in range(len(question.choices))]
    if scoring == "cloze":
        return cloze_prompt(question), [f" {choice}" for choice in question.choices]
    if scoring == "completion":  # the question is the start of a sentence that the answer completes
        return question.question.strip(), [f" {choice}" for choice in question.choices]
    raise ValueError(f"unknown scoring {scoring!r}; use one of {', '.join(SCORINGS)}")


def choice_scores(question: Question, loglikelihoods: Sequence[float], scoring: str) -> list[float]:
    """What the prediction maximises: the log-likelihood (letter) or it per character (cloze)."""
    if scoring in ("cloze", "completion"):
        # max(.., 1): an empty choice would divide by zero (lm-eval yields inf there)
        return [ll / max(len(choice), 1) for ll, choice in zip(loglikelihoods, question.choices)]
    return list(loglikelihoods)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on ties (as numpy.argmax)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


# ---------------------------------------------------------------------------------------------
# Results


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


def result_from_loglikelihoods(task: Task, scoring: str, loglikelihoods: list[list[float]],
                               backend: str = "native") -> TaskResult:
    predictions = []
    for index, (question, lls) in enumerate(zip(task.questions, loglikelihoods)):
        predicted = argmax(choice_scores(question, lls, scoring))
        predictions.append(Prediction(index, predicted, question.answer, predicted == question.answer,
                                      [float(ll) for ll in lls]))
    return TaskResult.from_predictions(task.name, scoring, predictions,
                                       (len(q.choices) for q in task.questions), backend)


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


RESULTS_WRITER = "rmu eval"  # marks a results file rmu may replace (rmu.outputs.check_file)


def save_results(results: dict[str, TaskResult], path: str | Path, **metadata) -> Path:
    """Write ``{"written_by": "rmu eval", "metadata": ..., "results": {task: TaskResult as dict}}`` as JSON, atomically."""
    from rmu.outputs import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"written_by": RESULTS_WRITER, "metadata": metadata,
               "results": {name: r.to_dict() for name, r in results.items()}}
    write_atomic(path, json.dumps(payload, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Log-likelihoods


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation tokens, split as lm-eval splits them for causal models.

    Trailing spaces of the context move to the continuation; the continuation's tokens are those
    of the whole text beyond the tokens of the context alone.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    context_ids = tokenizer(context)["input_ids"]
    return context_ids, whole[len(context_ids):]


def model_max_length(model) -> int:
    config = model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_LENGTH


@dataclass
class _Request:
    """One (context, continuation) pair: the model reads ``inputs`` and is scored on ``targets``."""

    inputs: tuple[int, ...]
    targets: list[int]


def _request(tokenizer, context: str, continuation: str, max_length: int) -> _Request:
    context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
    if not continuation_ids:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens after {context[-40:]!r}")
    if not context_ids:  # condition on BOS (else EOS), as lm-eval does for an empty context
        bos = tokenizer.bos_token_id
        context_ids = [bos if bos is not None else tokenizer.eos_token_id]
    tokens = (context_ids + continuation_ids)[-(max_length + 1):]  # cut on the left, as lm-eval
    return _Request(inputs=tuple(tokens[:-1]), targets=continuation_ids[-(len(tokens) - 1):])


def _pad_id(model, tokenizer) -> int:
    """Any valid token id will do: right padding sits after every scored position."""
    vocabulary = model.get_input_embeddings().num_embeddings
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None and 0 <= candidate < vocabulary:
            return candidate
    return 0


def _supports_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _input_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


@torch.no_grad()
def _score_batch(model, inputs: list[tuple[int, ...]], need: list[int], pad_id: int,
                 logits_to_keep: bool) -> list[torch.Tensor]:
    """Log-probabilities (float32) over the vocabulary at the last ``need[i]`` positions of row i."""
    lengths = [len(row) for row in inputs]
    width = max(lengths)
    ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, tokens in enumerate(inputs):  # right padding keeps every real token's position
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    # Only the positions scored need logits: the window from the earliest one to the end.
    start = min(length - k for length, k in zip(lengths, need))
    kwargs = {"logits_to_keep": width - start} if logits_to_keep else {}
    device = _input_device(model)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
    logits = logits[:, -(width - start):]
    return [
        torch.log_softmax(logits[row, length - k - start: length - start].float(), dim=-1)
        for row, (length, k) in enumerate(zip(lengths, need))
    ]


def loglikelihoods(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                   max_length: int | None = None, progress: bool = True,
                   desc: str = "scoring") -> list[float]:
    """Sum of log-probabilities of each continuation given its context, one value per pair.

    Pairs sharing the same model input (e.g. single-token letters after one prompt) share one
    forward pass. The model is put in eval mode for the call and restored afterwards.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    max_length = max_length or model_max_length(model)
    requests = [_request(tokenizer, context, continuation, max_length) for context, continuation in pairs]
    # Distinct inputs, longest first (ties in order of appearance): deterministic and little padding.
    by_input: dict[tuple[int, ...], list[int]] = {}
    for number, request in enumerate(requests):
        by_input.setdefault(request.inputs, []).append(number)
    order = sorted(by_input, key=lambda inputs: -len(inputs))
    pad_id, logits_to_keep = _pad_id(model, tokenizer), _supports_logits_to_keep(model)

    results = [0.0] * len(requests)
    was_training = model.training
    model.eval()
    try:
        for begin in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress,
                          unit="batch", dynamic_ncols=True):
            batch = order[begin: begin + batch_size]
            need = [max(len(requests[n].targets) for n in by_input[inputs]) for inputs in batch]
            log_probs = _score_batch(model, batch, need, pad_id, logits_to_keep)
            for inputs, k, row in zip(batch, need, log_probs):
                for number in by_input[inputs]:
                    targets = requests[number].targets
                    target_ids = torch.tensor(targets, device=row.device)[:, None]
                    results[number] = float(row[k - len(targets):].gather(1, target_ids).sum())
    finally:
        model.train(was_training)
    return results


# ---------------------------------------------------------------------------------------------
# Evaluation


def score_task(model, tokenizer, task: Task, scoring: str = "letter", batch_size: int = 8,
               max_length: int | None = None, progress: bool = True) -> TaskResult:
    """Evaluate one task with the native scorer."""
    pairs, spans = [], []
    for question in task.questions:
        context, continuations = prompt_and_continuations(question, scoring)
        spans.append((len(pairs), len(pairs) + len(continuations)))
        pairs += [(context, continuation) for continuation in continuations]
    flat = loglikelihoods(model, tokenizer, pairs, batch_size, max_length, progress,
                          desc=f"{task.name} ({scoring})")
    return result_from_loglikelihoods(task, scoring, [flat[a:b] for a, b in spans])


def as_task_list(tasks) -> list:
    """One task, name or path, or a sequence of them, as a list."""
    if isinstance(tasks, (str, Path, Task)):
        return [tasks]
    return list(tasks)


def evaluate(model, tokenizer, tasks, scoring: str = "letter", batch_size: int = 8,
             limit: int | None = None, progress: bool = True, backend: str = "native",
             max_length: int | None = None) -> dict[str, TaskResult]:
    """Evaluate an in-memory model on multiple-choice tasks; returns ``{task name: TaskResult}``.

    ``tasks``: a :class:`~rmu.tasks.Task`, a task name (``mmlu``, ``mmlu_virology``, ...) or file
    path, or a list of them. ``scoring``: ``letter`` or ``cloze`` (see the module docstring).
    ``limit``: only the first N questions of each task. ``backend``: ``native`` (this module) or
    ``lm-eval`` (lm-evaluation-harness, see :mod:`rmu.lm_eval_backend`; it also runs the harness's
    own tasks by name, e.g. ``wmdp_bio``). The model is not copied or reloaded.
    """
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; use one of {', '.join(SCORINGS)}")
    if backend == "lm-eval":
        if scoring == "completion":
            raise ValueError("completion scoring runs on the native backend only; use --backend native")
        from rmu.lm_eval_backend import evaluate_with_lm_eval

        return evaluate_with_lm_eval(model, tokenizer, tasks, scoring, batch_size, limit, progress,
                                     max_length)
    if backend != "native":
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    results = {}
    for item in as_task_list(tasks):
        task = load_task(item).head(limit)
        name = unique_name(task.name, results)
        results[name] = score_task(model, tokenizer, task, scoring, batch_size, max_length, progress)
        results[name].task = name
    return results


def unique_name(name: str, taken) -> str:
    """``name``, or ``name_2``, ``name_3``, ... if taken (two files called data.jsonl, say)."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}_{number}"
    return candidate


# ---------------------------------------------------------------------------------------------
# Perplexity


def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 8, progress: bool = True) -> float:
    """Token-level perplexity of ``texts``, each scored after the EOS token as its only context.

    Every token of a text counts (lm-eval's rolling log-likelihood with one prefix token); the
    result is exp(total negative log-likelihood / total tokens) over all texts.
    """
    prefix = tokenizer.eos_token or tokenizer.bos_token
    if prefix is None:
        raise ValueError("perplexity needs a tokenizer with an EOS or BOS token to start each text")
    pairs = [(prefix, text) for text in texts]
    counts = [len(encode_pair(tokenizer, prefix, text)[1]) for text in texts]
    total = loglikelihoods(model, tokenizer, pairs, batch_size=batch_size, progress=progress, desc="perplexity")
    return math.exp(-sum(total) / sum(counts))
