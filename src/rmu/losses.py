"""The two losses' arithmetic: which positions count, and the mean squared error over them.

Below the engine, so that the engine, the scale rule's calibration and the run health report
compute the losses the same way without importing one another.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rmu.config import UnlearnConfig
from rmu.data import TokenBatch


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
               in_model_dtype: bool = False) -> torch.Tensor:
    """Mean squared error over batch x tokens x hidden; over real tokens only with a mask.

    In float32, or in the prediction's own dtype with ``in_model_dtype`` (the published scripts).
    """
    if in_model_dtype:
        target = target.to(prediction.dtype).expand_as(prediction)
    else:
        prediction, target = prediction.float(), target.float().expand_as(prediction)
    if mask is None:
        return F.mse_loss(prediction, target)
    weights = mask.to(prediction.dtype).unsqueeze(-1)
    # clamp: a rank whose rows hold no position (all masked) contributes 0, with weight 0 anyway
    return ((prediction - target) ** 2 * weights).sum() / (weights.sum().clamp_min(1) * prediction.shape[-1])


def loss_mask(batch: TokenBatch, config: UnlearnConfig) -> torch.Tensor | None:
    """The positions the losses and norms use: None for all (the published scripts), else a 0/1 mask.

    ``mask_padding`` drops pads; ``mask_first_token`` drops each row's first real token, the
    attention sink, whose hidden state in models with massive activations (SmolLM2 from layer 11,
    Llama, Mistral) is 100x larger than the others' and would otherwise dominate every MSE.
    A batch's ``excluded`` tokens (``--keyword-mask``: the inserted keyword sentences) are dropped too,
    and with ``row_weights`` (``--keyword-retain-weight``) the mask is a float weight per position.
    """
    if not (config.mask_padding or config.mask_first_token) and batch.excluded is None and batch.row_weights is None:
        return None
    attention = batch.attention_mask
    mask = attention.clone() if config.mask_padding else torch.ones_like(attention)
    if config.mask_first_token:
        first_real = attention.argmax(dim=1)  # left or right padding: the first 1 of each row
        mask[torch.arange(mask.shape[0], device=mask.device), first_real] = 0
    if batch.excluded is not None:
        mask = mask.masked_fill(batch.excluded.to(mask.device), 0)
    if batch.row_weights is not None:  # a weighted mean: these rows' positions count w times
        mask = mask * batch.row_weights.to(mask.device, torch.float32)[:, None]
    return mask


def used_positions(batch: TokenBatch, mask: torch.Tensor | None) -> torch.Tensor:
    """The positions a ``loss_mask`` keeps, as booleans (every real token when it is None)."""
    return (batch.attention_mask if mask is None else mask).bool()


def retain_dims(loss_dims: str, dims: torch.Tensor | None) -> torch.Tensor | None:
    """The dimensions the retain loss uses: the forget loss's ``dims`` with ``--loss-dims informative``,
    every dimension (None) otherwise (``forget-informative`` holds the massive ones too)."""
    return dims if loss_dims == "informative" else None


def informative_dims(hidden_size: int, massive: list[int], device=None) -> torch.Tensor:
    """The indices of the hidden dimensions that are not in ``massive`` (``--loss-dims informative``)."""
    keep = torch.ones(hidden_size, dtype=torch.bool)
    keep[list(massive)] = False
    if not keep.any():
        raise ValueError(f"every one of the {hidden_size} dimensions is massive; use --loss-dims all")
    return keep.nonzero().flatten().to(device)


def select_dims(hidden: torch.Tensor, dims: torch.Tensor | None) -> torch.Tensor:
    """``hidden`` (..., d) restricted to the dimensions ``dims``; itself, untouched, when ``dims`` is None."""
    return hidden if dims is None else hidden.index_select(-1, dims.to(hidden.device))


def informative_vector(u: torch.Tensor, dims: torch.Tensor | None) -> torch.Tensor:
    """The control vector in the dimensions the losses use: u restricted to ``dims`` and renormalised to
    unit length (so that c u has length c there); u itself when ``dims`` is None."""
    if dims is None:
        return u
    restricted = select_dims(u.float(), dims)
    return (restricted / restricted.norm().clamp_min(1e-30)).to(u.dtype)
