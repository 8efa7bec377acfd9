"""Pieces every analysis shares: loading a model once, result files, reading layer outputs."""

from __future__ import annotations

from pathlib import Path

import torch

from rmu.data import TokenBatch, prepare_tokenizer, read_corpus, tokenize
from rmu.experiments.base import ExperimentError, load_full_model, read_json, write_json  # noqa: F401
from rmu.runner import decoder_outputs, layer_output  # noqa: F401  (moved to rmu.runner; still importable here)


# One error class for every experiment (analyses, sweeps, attacks); the old name stays.
AnalysisError = ExperimentError


def model_or_path(model, tokenizer=None, **load_options):
    """Accept a loaded ``(model, tokenizer)`` pair or a checkpoint path."""
    if isinstance(model, (str, Path)):
        return load_full_model(model, **load_options)
    if tokenizer is None:
        raise AnalysisError("pass the tokenizer together with an in-memory model")
    return model, tokenizer


def forget_batches(tokenizer, source: str | list[str], batch_size: int, max_len: int,
                   max_batches: int | None = None, min_len: int = 0) -> list[TokenBatch]:
    """Tokenised batches of a corpus (file or list of texts), with the engine's conventions."""
    texts = read_corpus(str(source), min_len) if isinstance(source, (str, Path)) else list(source)
    if not texts:
        raise AnalysisError("the corpus holds no text")
    prepare_tokenizer(tokenizer)
    batches = [tokenize(tokenizer, texts[i: i + batch_size], max_len) for i in range(0, len(texts), batch_size)]
    return batches[:max_batches] if max_batches else batches


def mean_cosine(hidden: torch.Tensor, u: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Sum over real tokens of cos(h_t, u), and the number of real tokens."""
    cos = torch.nn.functional.cosine_similarity(hidden.float(), u.float().to(hidden.device)[None, None], dim=-1)
    real = mask.bool().to(cos.device)
    return float(cos[real].sum()), int(real.sum())
