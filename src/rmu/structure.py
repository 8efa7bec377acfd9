"""Where things are inside any causal LM: its decoder layers, its width, the weights RMU trains.

Everything is found by structure (module types and tensor shapes), never by a hard-coded attribute
path and never by evaluating a string, so a new architecture needs no entry in a table here.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from rmu.errors import RmuError

# Direct children of a decoder layer whose names say they are the attention sub-layer. They are
# excluded when looking for the MLP, which is then the largest remaining sub-layer.
_ATTENTION_WORDS = ("attn", "attention")


class StructureError(RmuError, ValueError):
    """The model does not look like a decoder-only transformer we can work with."""


@dataclass(frozen=True)
class ModelStructure:
    """The parts of a causal LM that RMU needs to know about."""

    layers: nn.ModuleList
    layers_name: str  # qualified name of the ModuleList inside the model, e.g. "model.layers"
    hidden_size: int

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_prefix(self, index: int) -> str:
        return f"{self.layers_name}.{index}."


def find_structure(model: nn.Module) -> ModelStructure:
    """Find the decoder layers: the longest ModuleList whose entries all share one class."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if best is None or len(module) > best[0]:
            best = (len(module), name, module)
    if best is None:
        raise StructureError(
            f"{type(model).__name__} has no list of identical decoder layers; rmu supports "
            "decoder-only transformers (Llama, Mistral, Qwen, Gemma, GPT-2, GPT-NeoX, Phi, ...)."
        )
    _, name, layers = best
    return ModelStructure(layers=layers, layers_name=name, hidden_size=_hidden_size(model))


def check_layer(layers: int | Iterable[int], num_layers: int, *, option: str = "layer",
                error: type[Exception] = StructureError) -> None:
    """Raise ``error`` when a layer index (or any of several) is outside ``0..num_layers - 1``.

    ``option`` names where the index came from (``--layer``); the message gives the valid range.
    """
    single = isinstance(layers, int)
    bad = [k for k in ([layers] if single else layers) if not 0 <= k < num_layers]
    if bad:
        which = f"{option} {bad[0]} is" if single else f"{option}s {bad} are"
        raise error(f"{which} outside the model: it has layers 0..{num_layers - 1}")


def _hidden_size(model: nn.Module) -> int:
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    if isinstance(embeddings, nn.Embedding):
        return embeddings.embedding_dim
    config = getattr(model, "config", None)
    for key in ("hidden_size", "n_embd", "d_model"):
        if config is not None and isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise StructureError(f"cannot tell the hidden size of {type(model).__name__}")


def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a linear map: nn.Linear or GPT-2's transposed Conv1D."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.ndim == 2:
        return weight.shape[0], weight.shape[1]
    return None


def find_mlp(layer: nn.Module) -> tuple[str, nn.Module]:
    """The MLP sub-layer: the largest direct child that is not attention and holds linear maps."""
    candidates = []
    for name, child in layer.named_children():
        if any(word in name.lower() for word in _ATTENTION_WORDS):
            continue
        linears = [m for m in child.modules() if _linear_shape(m) is not None]
        if len(linears) >= 2:
            size = sum(p.numel() for p in child.parameters())
            candidates.append((size, name, child))
    if not candidates:
        raise StructureError(f"no MLP found in decoder layer {type(layer).__name__}")
    _, name, mlp = max(candidates, key=lambda item: item[0])
    return name, mlp


def mlp_output_projection(layer: nn.Module, hidden_size: int) -> str:
    """Name (relative to the layer) of the MLP's output projection weight.

    That is the last linear map of the MLP that writes the hidden size from a wider input:
    Llama's ``down_proj``, GPT-2's ``c_proj``, GPT-NeoX's ``dense_4h_to_h``, Phi's ``fc2``.
    """
    mlp_name, mlp = find_mlp(layer)
    found = None
    for name, module in mlp.named_modules():
        shape = _linear_shape(module)
        if shape is not None and shape[1] == hidden_size and shape[0] != hidden_size:
            found = name
    if found is None:
        raise StructureError(f"no output projection found in the MLP '{mlp_name}'")
    return f"{mlp_name}.{found}.weight"


def layer_hidden(output) -> torch.Tensor:
    """The hidden state a decoder layer returned: a tensor (transformers 5) or a tuple's first item."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_layer_hidden(output, hidden: torch.Tensor):
    """A decoder layer's ``output`` with its hidden state replaced, in the same form (for hooks)."""
    if isinstance(output, (tuple, list)):
        return type(output)([hidden, *output[1:]])
    return hidden


# Named selections for ``--params``; anything else is a glob on parameter names inside the layer.
PARAM_PRESETS = ("mlp-out", "mlp", "attn", "layer")


def _preset_patterns(preset: str, layer: nn.Module, hidden_size: int) -> list[str]:
    if preset == "mlp-out":
        return [mlp_output_projection(layer, hidden_size)]
    if preset == "mlp":
        return [f"{find_mlp(layer)[0]}.*"]
    if preset == "attn":
        names = [n for n, _ in layer.named_children() if any(w in n.lower() for w in _ATTENTION_WORDS)]
        return [f"{n}.*" for n in names]
    if preset == "layer":
        return ["*"]
    raise AssertionError(preset)


def select_parameters(
    model: nn.Module, structure: ModelStructure, layer_ids: list[int], patterns: list[str]
) -> dict[str, nn.Parameter]:
    """The parameters to train: ``patterns`` (presets or globs) matched inside each given layer.

    Returns full parameter names (as in ``model.named_parameters()``) in model order.
    """
    selected: dict[str, nn.Parameter] = {}
    for index in layer_ids:
        layer = structure.layers[index]
        globs: list[str] = []
        for pattern in patterns:
            if pattern in PARAM_PRESETS:
                globs.extend(_preset_patterns(pattern, layer, structure.hidden_size))
            else:
                globs.append(pattern)
        prefix = structure.layer_prefix(index)
        for name, parameter in layer.named_parameters():
            if any(fnmatch.fnmatchcase(name, g) for g in globs):
                selected[prefix + name] = parameter
    if not selected:
        available = sorted({n for n, _ in structure.layers[layer_ids[0]].named_parameters()})
        raise StructureError(
            f"--params {','.join(patterns)} matched no weight in layers {layer_ids}; use a preset "
            f"({', '.join(PARAM_PRESETS)}) or a glob over these names: {', '.join(available)}"
        )
    order = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    return dict(sorted(selected.items(), key=lambda item: order.get(item[0], 0)))
