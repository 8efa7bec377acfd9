"""Control vectors u and the rules that scale them into forget targets (c * u).

RMU uses a fixed steering coefficient c per topic. Adaptive RMU replaces c by beta * ||h_l^frozen||,
which the paper and the authors' code read differently; both readings are here, by name:

- ``first-batch`` (the authors' released code, the default): per topic, one coefficient
  beta * mean over the topic's first forget batch of the mean per-token L2 norm of the frozen
  layer-l hidden state (pads included, or excluded with mask_padding), fixed for the whole run.
  The authors take it from the model being updated at that topic's first step (after one update for
  the second topic); by default we take it from the frozen model, identical for the first topic
  (``adaptive_source: updated`` takes it as the authors do, in the engine's step).
- ``per-sample`` (the paper's formula): every step, per forget sample,
  beta * || mean over tokens of the frozen layer-l hidden state ||, recomputed each step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from rmu.config import ConfigError


def random_control_vectors(topics: list[str], hidden_size: int, seed: int) -> dict[str, torch.Tensor]:
    """One unit vector per topic, entries uniform in [0, 1) before normalising (positive orthant)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = {}
    for topic in topics:
        vector = torch.rand(hidden_size, generator=generator, dtype=torch.float32)
        vectors[topic] = vector / vector.norm()
    return vectors


def published_control_vectors(topics: list[str], hidden_size: int, seed: int, dtype: torch.dtype,
                              device: torch.device | str) -> dict[str, torch.Tensor]:
    """The published scripts' draw: after ``torch.manual_seed(seed)`` (and the CUDA seeds), per topic
    ``torch.rand(1, 1, d)`` in the model's dtype on its device, divided by its norm in that dtype.

    This reseeds torch's global generator, as the scripts do at start-up. The unit vectors are
    returned in float32 (exact: every bfloat16/float16 value is a float32 value); the engine scales
    them by c in the model's dtype, as the scripts do.
    """
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    vectors = {}
    for topic in topics:
        draw = torch.rand(1, 1, hidden_size, dtype=dtype, device=device)
        vectors[topic] = (draw / torch.norm(draw)).reshape(hidden_size).float().cpu()
    return vectors


def control_vectors(config, topics: list[str], hidden_size: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The u of each topic for a run of ``config`` (an UnlearnConfig): its ``control_vectors`` file,
    or the draw its ``vector_draw`` names from its seed (``original`` draws in the model's dtype)."""
    if config.control_vectors:
        return load_control_vectors(config.control_vectors, topics, hidden_size)
    if config.vector_draw == "original":
        return published_control_vectors(topics, hidden_size, config.seed, dtype, device)
    return random_control_vectors(topics, hidden_size, config.seed)


def save_control_vectors(vectors: dict[str, torch.Tensor], path: str | Path) -> None:
    save_file({k: v.contiguous().cpu() for k, v in vectors.items()}, str(path))


def check_control_vectors(path: str | Path, topics: list[str], hidden_size: int) -> None:
    """A --control-vectors file is readable safetensors with one vector of the model's width per topic.

    Reads the file's header only, so it can run before the model is loaded."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--control-vectors {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ConfigError(unreadable_control_vectors(path, error)) from None
    missing = [topic for topic in topics if topic not in shapes]
    if missing:
        raise ConfigError(f"--control-vectors {path} has no vector for topic(s) {missing}; it has {sorted(shapes)}")
    for topic in topics:
        if shapes[topic] != (hidden_size,):
            raise ConfigError(f"--control-vectors {path}: vector '{topic}' has shape {shapes[topic]}, the model's "
                              f"hidden size is {hidden_size}")


def load_control_vectors(path: str | Path, topics: list[str], hidden_size: int) -> dict[str, torch.Tensor]:
    """Saved vectors for ``topics``; a clear error when a topic is missing or the width differs."""
    check_control_vectors(path, topics, hidden_size)
    vectors = load_file(str(path))
    return {t: vectors[t].float() for t in topics}


def unreadable_control_vectors(path: Path, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"--control-vectors {path} is not a safetensors file of control vectors ({reason}); pass the "
            "control_vectors.safetensors that rmu unlearn wrote")


def token_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, tokens, d) -> (batch, d): mean over tokens, over real tokens only when a mask is given."""
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


def mean_token_norm(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per sample, the mean over tokens of the per-token L2 norm: (batch, tokens, d) -> (batch,)."""
    norms = hidden.float().norm(dim=-1).unsqueeze(-1)
    return token_mean(norms, mask).squeeze(-1)


def first_batch_coefficient(beta: float, frozen_hidden: torch.Tensor, mask: torch.Tensor | None) -> float:
    """The ``first-batch`` rule: beta * mean over the batch of the mean per-token norm."""
    return float(beta * mean_token_norm(frozen_hidden, mask).mean())


def per_sample_coefficients(beta: float, frozen_hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The ``per-sample`` rule: beta * ||token-averaged frozen hidden state||, one per sample."""
    return beta * token_mean(frozen_hidden.float(), mask).norm(dim=-1)
