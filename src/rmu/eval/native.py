"""The native backend: batched log-likelihoods of continuations from a causal LM held in memory.

Tokenisation follows lm-evaluation-harness: the context and context+continuation are encoded with
the tokenizer's defaults (a BOS token where the tokenizer adds one), and the continuation tokens
are what the second encoding has beyond the first. Sequences longer than the model's context are
cut on the left. Every distinct input is run once (the four letters share one forward pass), in
batches padded on the right, longest first; results do not depend on the batch size beyond float
rounding. Prompts: :mod:`rmu.eval.prompts`; the decision: :mod:`rmu.eval.scoring`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from rmu.eval.prompts import prompt_and_continuations
from rmu.eval.results import TaskResult
from rmu.eval.scoring import result_from_loglikelihoods
from rmu.eval.tasks import Task, as_task_list, load_task, unique_name
from rmu.progress import bar as tqdm
from rmu.runner import eval_mode

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when the config names no context length


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
    with eval_mode(model):
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


def evaluate_native(model, tokenizer, tasks, scoring: str = "letter", batch_size: int = 8,
                    limit: int | None = None, progress: bool = True,
                    max_length: int | None = None) -> dict[str, TaskResult]:
    """Every task (a Task, name or file, or a list of them) with the native scorer; ``{name: TaskResult}``."""
    results = {}
    for item in as_task_list(tasks):
        task = load_task(item).head(limit)
        name = unique_name(task.name, results)
        results[name] = score_task(model, tokenizer, task, scoring, batch_size, max_length, progress)
        results[name].task = name
    return results


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
