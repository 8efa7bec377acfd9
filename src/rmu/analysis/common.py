"""Pieces every analysis shares: loading a model once, result files, reading layer outputs."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rmu.data import TokenBatch, prepare_tokenizer, read_corpus, tokenize
from rmu.errors import RmuError
from rmu.runner import decoder_outputs, layer_output  # noqa: F401  (moved to rmu.runner; still importable here)


class AnalysisError(RmuError, ValueError):
    """Bad input to a sweep or an analysis; the message says what to change."""


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (a crash never leaves half a file that a resume would trust)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, default=_jsonable)
        stream.write("\n")
    os.replace(temporary, path)
    return path


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AnalysisError(f"{path} is not valid JSON: {error}") from None


def load_full_model(source, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
    """The whole model (with its LM head, evaluation needs it) and its tokenizer, in eval mode."""
    from rmu.loading import CheckpointError, load_model

    try:
        model, tokenizer = load_model(source, upto_layer=None, dtype=getattr(torch, dtype), device=device,
                                      trust_remote_code=trust_remote_code)
    except (OSError, CheckpointError) as error:
        raise AnalysisError(f"could not load model {source!s}: {error}") from None
    return model.eval(), tokenizer


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
