"""Pieces every analysis shares: loading a model once, result files, reading layer outputs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rmu.data import TokenBatch, prepare_tokenizer, read_corpus, tokenize
from rmu.engine import LayerRunner
from rmu.experiments.base import ExperimentError, load_full_model, read_json, write_json  # noqa: F401
from rmu.structure import find_structure, layer_hidden


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


def layer_output(model: nn.Module, layer: int, batch: TokenBatch) -> torch.Tensor:
    """Layer ``layer``'s output hidden state for ``batch`` with the model's CURRENT weights.

    Reuses the engine's LayerRunner (forward stopped right after the layer, nothing above runs).
    """
    structure = find_structure(model)
    if not 0 <= layer < structure.num_layers:
        raise AnalysisError(f"layer {layer} is outside the model: it has layers 0..{structure.num_layers - 1}")
    device = next(model.parameters()).device
    runner = LayerRunner(model, structure, layer, layer, {})  # no swapped weights: the current ones
    return runner.frozen(batch.to(device)).output


def mean_cosine(hidden: torch.Tensor, u: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Sum over real tokens of cos(h_t, u), and the number of real tokens."""
    cos = torch.nn.functional.cosine_similarity(hidden.float(), u.float().to(hidden.device)[None, None], dim=-1)
    real = mask.bool().to(cos.device)
    return float(cos[real].sum()), int(real.sum())


@torch.no_grad()
def decoder_outputs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    ) -> list[torch.Tensor]:
    """Every decoder layer's output hidden state, in order, from one forward pass.

    Read with hooks on the layers rather than ``output_hidden_states``, whose last entry is, on
    most architectures, the state after the final norm and not the last layer's output.
    """
    layers = find_structure(model).layers
    outputs: list[torch.Tensor | None] = [None] * len(layers)

    def keep(index: int):
        def hook(module, args, output):
            outputs[index] = layer_hidden(output)
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return outputs
