"""Running a model partway: below the engine, the analyses and the attacks.

* :class:`LayerRunner` runs layers 0..l of a model twice per batch, as the engine needs (see
  :mod:`rmu.engine`): a frozen pass (the original weights swapped in, no gradients) that stops
  right after layer l and records what each updated layer receives, then the updated layers
  (:class:`UpdatedLayers`, the module DDP / FSDP wrap: :func:`rmu.distributed.distribute`) again,
  with gradients, from that shared prefix;
* :func:`forward_until` stops any forward pass right after a given layer (nothing above it runs);
* :func:`layer_output` and :func:`decoder_outputs` read decoder layers' output hidden states;
* :func:`restored_mode`, :func:`eval_mode` and :func:`trainable_only` change a model's train/eval
  mode or its ``requires_grad`` flags for a block and put them back after it, even when the block
  raises.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.utils.checkpoint
from torch import nn

from rmu.data import TokenBatch
from rmu.structure import ModelStructure, StructureError, check_layer, find_structure, layer_hidden


class StopForward(Exception):
    """Raised inside the model's forward once the layers we need have run (caught by forward_until)."""


def forward_until(layer: nn.Module, run: Callable[[], object], what: str = "the requested layer") -> torch.Tensor:
    """Call ``run()`` (a forward pass of the model holding ``layer``), stop it right after ``layer``
    and return that layer's output hidden state. Hooks registered on ``layer`` before this call run
    first (they may change the output); nothing above ``layer`` runs."""
    captured: dict[str, torch.Tensor] = {}

    def keep_and_stop(module, args, output):
        captured["output"] = layer_hidden(output)
        raise StopForward

    handle = layer.register_forward_hook(keep_and_stop)
    try:
        run()
    except StopForward:
        pass
    finally:
        handle.remove()
    if "output" not in captured:
        raise StructureError(f"the model's forward never reached {what}")
    return captured["output"]


# ---------------------------------------------------------------------------------------------
# Modes and flags, put back after a block
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def restored_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule's train/eval flag back on exit (some code, e.g. lm-eval's HFLM, switches it)."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the block; every submodule's own mode is back after it."""
    with restored_mode(module):
        module.eval()
        yield


@contextlib.contextmanager
def trainable_only(model: nn.Module, trained: dict[str, nn.Parameter] | None = None) -> Iterator[None]:
    """Only ``trained`` (none when omitted) gets gradients in the block; every ``requires_grad`` flag
    is back after it. Flags are restored by name: parameters replaced meanwhile (FSDP shards) keep theirs."""
    previous = {name: p.requires_grad for name, p in model.named_parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in (trained or {}).values():
        parameter.requires_grad_(True)
    try:
        yield
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(previous.get(name, parameter.requires_grad))


# ---------------------------------------------------------------------------------------------
# The engine's two passes
# ---------------------------------------------------------------------------------------------


@dataclass
class _LayerCall:
    args: tuple  # positional arguments after the hidden state
    kwargs: dict
    hidden_is_keyword: bool


@dataclass
class FrozenPass:
    """What one frozen pass leaves behind for the updated pass and the losses."""

    hidden_in: torch.Tensor  # input of the first updated layer (shared by both models)
    calls: list[_LayerCall]  # arguments of layers first..l
    output: torch.Tensor  # frozen layer-l output


class UpdatedLayers(nn.Module):
    """The layers first updated .. l as one module, so DDP / FSDP can wrap them."""

    def __init__(self, layers: list[nn.Module], gradient_checkpointing: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, hidden: torch.Tensor, calls: list[_LayerCall]) -> torch.Tensor:
        for layer, call in zip(self.layers, calls):
            if self.gradient_checkpointing:
                # Keep only each layer's input; recompute its activations during backward.
                hidden = torch.utils.checkpoint.checkpoint(_run_layer, layer, hidden, call, use_reentrant=False)
            else:
                hidden = _run_layer(layer, hidden, call)
        return hidden


def _run_layer(layer: nn.Module, hidden: torch.Tensor, call: _LayerCall) -> torch.Tensor:
    if call.hidden_is_keyword:
        output = layer(*call.args, hidden_states=hidden, **call.kwargs)
    else:
        output = layer(hidden, *call.args, **call.kwargs)
    return layer_hidden(output)


class LayerRunner:
    """Runs layers 0..l of a model: frozen (original weights, no grad) or updated (with grad)."""

    def __init__(self, model: nn.Module, structure: ModelStructure, first: int, last: int,
                 frozen_weights: dict[str, torch.Tensor], gradient_checkpointing: bool = False):
        self.model = model
        self.decoder_layers = structure.layers
        self.first = first
        self.stack = UpdatedLayers([structure.layers[i] for i in range(first, last + 1)], gradient_checkpointing)
        self.updated_module: nn.Module = self.stack  # DDP / FSDP wrap it (rmu.distributed.distribute)
        self.frozen_weights = frozen_weights
        self.frozen_copy: list[nn.Module] | None = None  # under FSDP, runs in place of layers first..l

    @contextlib.contextmanager
    def _frozen_layers_in_place(self):
        if self.frozen_copy is None:
            yield list(self.stack.layers), self.frozen_weights
            return
        updated = list(self.stack.layers)
        for offset, layer in enumerate(self.frozen_copy):
            self.decoder_layers[self.first + offset] = layer
        try:
            yield self.frozen_copy, {}
        finally:
            for offset, layer in enumerate(updated):
                self.decoder_layers[self.first + offset] = layer

    def frozen(self, batch: TokenBatch) -> FrozenPass:
        # The frozen model never trains: its pass runs in eval mode even when the updated layers train.
        with self._frozen_layers_in_place() as (layers, weights), eval_mode(self.stack):
            return self._frozen_pass(batch, layers, weights)

    def _frozen_pass(self, batch: TokenBatch, layers: list[nn.Module], weights: dict) -> FrozenPass:
        calls: list[_LayerCall] = []
        captured: dict[str, torch.Tensor] = {}

        def record_inputs(module, args, kwargs):
            hidden_is_keyword = not args
            if not calls:
                captured["hidden_in"] = kwargs["hidden_states"] if hidden_is_keyword else args[0]
            rest_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            calls.append(_LayerCall(tuple(args[1:]), rest_kwargs, hidden_is_keyword))

        def run_model():
            with torch.no_grad():
                torch.func.functional_call(
                    self.model, weights, (),
                    {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "use_cache": False},
                    strict=False,
                )

        handles = [layer.register_forward_pre_hook(record_inputs, with_kwargs=True) for layer in layers]
        try:
            output = forward_until(layers[-1], run_model, "the steered layer")
        finally:
            for handle in handles:
                handle.remove()
        return FrozenPass(captured["hidden_in"], calls, output)

    def updated(self, frozen: FrozenPass) -> torch.Tensor:
        return self.updated_module(frozen.hidden_in, frozen.calls)


# ---------------------------------------------------------------------------------------------
# Reading layer outputs
# ---------------------------------------------------------------------------------------------


def layer_output(model: nn.Module, layer: int, batch: TokenBatch) -> torch.Tensor:
    """Layer ``layer``'s output hidden state for ``batch`` with the model's CURRENT weights.

    The engine's frozen pass without swapped weights: the forward stops right after the layer.
    """
    structure = find_structure(model)
    check_layer(layer, structure.num_layers)
    device = next(model.parameters()).device
    runner = LayerRunner(model, structure, layer, layer, {})  # no swapped weights: the current ones
    return runner.frozen(batch.to(device)).output


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
