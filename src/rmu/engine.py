"""The unlearning engine: RMU and Adaptive RMU, computing only what the losses need.

The reference code runs two full model copies through every layer and the LM head to read one
hidden state. Here, per batch:

1. one no-grad pass of the model, with the ORIGINAL values of the trained weights swapped in
   (``torch.func.functional_call``), runs layers 0..l and stops there. It yields the frozen
   layer-l output (the retain target, the Adaptive RMU norm) and, captured at the first updated
   layer, the shared prefix: the hidden state entering it and the arguments the model passes to
   each layer (masks, rotary embeddings), which are identical for the frozen and updated models;
2. the updated layers (first updated .. l) run again with gradients, from that shared prefix.

So the model is held once, plus a copy of only the trained tensors; nothing above layer l runs;
only the trained tensors get gradients. The arithmetic is the reference's (tests/reference_rmu.py
checks it step by step).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rmu import checkpoint, rules
from rmu.config import UnlearnConfig
from rmu.data import TokenBatch, consecutive_batches, prepare_tokenizer, read_corpus, tokenize
from rmu.structure import ModelStructure, find_structure, select_parameters


class UnlearnError(RuntimeError):
    """The run cannot go on (bad layer, diverging loss, ...); the message says why and what to do."""


class _StopForward(Exception):
    """Raised inside the model's forward once the layers we need have run."""


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


def _layer_output(output) -> torch.Tensor:
    # Decoder layers return a tensor (transformers 5) or a tuple whose first item is the hidden state.
    return output[0] if isinstance(output, (tuple, list)) else output


class LayerRunner:
    """Runs layers 0..l of a model: frozen (original weights, no grad) or updated (with grad)."""

    def __init__(self, model: nn.Module, structure: ModelStructure, first: int, last: int,
                 frozen_weights: dict[str, torch.Tensor]):
        self.model = model
        self.layers = [structure.layers[i] for i in range(first, last + 1)]
        self.frozen_weights = frozen_weights

    def frozen(self, batch: TokenBatch) -> FrozenPass:
        calls: list[_LayerCall] = []
        captured: dict[str, torch.Tensor] = {}

        def record_inputs(module, args, kwargs):
            hidden_is_keyword = not args
            if not calls:
                captured["hidden_in"] = kwargs["hidden_states"] if hidden_is_keyword else args[0]
            rest_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            calls.append(_LayerCall(tuple(args[1:]), rest_kwargs, hidden_is_keyword))

        def record_output_and_stop(module, args, kwargs, output):
            captured["output"] = _layer_output(output)
            raise _StopForward

        handles = [layer.register_forward_pre_hook(record_inputs, with_kwargs=True) for layer in self.layers]
        handles.append(self.layers[-1].register_forward_hook(record_output_and_stop, with_kwargs=True))
        try:
            with torch.no_grad():
                torch.func.functional_call(
                    self.model, self.frozen_weights, (),
                    {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "use_cache": False},
                    strict=False,
                )
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if "output" not in captured:
            raise UnlearnError("the model's forward never reached the steered layer")
        return FrozenPass(captured["hidden_in"], calls, captured["output"])

    def updated(self, frozen: FrozenPass) -> torch.Tensor:
        hidden = frozen.hidden_in
        for layer, call in zip(self.layers, frozen.calls):
            if call.hidden_is_keyword:
                output = layer(*call.args, hidden_states=hidden, **call.kwargs)
            else:
                output = layer(hidden, *call.args, **call.kwargs)
            hidden = _layer_output(output)
        return hidden


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over batch x tokens x hidden (float32); over real tokens only with a mask."""
    prediction, target = prediction.float(), target.float().expand_as(prediction)
    if mask is None:
        return F.mse_loss(prediction, target)
    weights = mask.to(prediction.dtype).unsqueeze(-1)
    return ((prediction - target) ** 2 * weights).sum() / (weights.sum() * prediction.shape[-1])


@dataclass
class UnlearnResult:
    """What a run produced. ``model`` holds the updated weights (in place when a model was passed)."""

    config: UnlearnConfig
    model: nn.Module
    tokenizer: object
    records: list[dict]
    coefficients: dict[str, float | None]
    control_vectors: dict[str, torch.Tensor]
    trained_parameters: list[str]
    original_weights: dict[str, torch.Tensor] = field(repr=False)
    output: Path | None = None
    seconds: float = 0.0
    loaded_from_source: bool = False  # the engine loaded config.model itself (possibly layers 0..l only)

    def restore_original(self) -> None:
        """Put the original values back into the trained tensors (reuse one model across runs)."""
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.original_weights.items():
                parameters[name].copy_(value)


Callback = Callable[[dict], None]


@dataclass
class _Corpora:
    forget: list[list[list[str]]]  # topic -> batches -> documents
    retain: list[list[list[str]]]  # topic -> batches -> documents (shared lists when one corpus)

    def available_steps(self) -> int:
        # As the reference: the shortest list of batches bounds the run.
        return min(min(len(b) for b in self.forget), min(len(b) for b in self.retain))


def _read_corpora(config: UnlearnConfig) -> _Corpora:
    retain_cache: dict[str, list[list[str]]] = {}
    forget, retain = [], []
    for index, topic in enumerate(config.topics):
        forget.append(consecutive_batches(read_corpus(config.forget[topic], config.min_len), config.batch_size))
        source = config.retain_for(index)
        if source not in retain_cache:
            retain_cache[source] = consecutive_batches(read_corpus(source, config.min_len), config.batch_size)
        retain.append(retain_cache[source])
    return _Corpora(forget, retain)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load(config: UnlearnConfig, device: torch.device):
    """The model (layers 0..l only, unless full_load) and its tokenizer, from the config's source."""
    from rmu.loading import load_model

    return load_model(
        config.model, upto_layer=None if config.full_load else config.layer, dtype=getattr(torch, config.dtype),
        device=device, trust_remote_code=config.trust_remote_code,
    )


def _check_layer_before_loading(config: UnlearnConfig) -> None:
    """Catch a layer outside the model from its config alone, before the weights are read."""
    from transformers import AutoConfig

    from rmu.loading import resolve_checkpoint

    model_config = AutoConfig.from_pretrained(resolve_checkpoint(config.model),
                                              trust_remote_code=config.trust_remote_code)
    depth = getattr(model_config.get_text_config(), "num_hidden_layers", None)
    if isinstance(depth, int) and config.layer >= depth:
        raise UnlearnError(f"--layer {config.layer} is outside the model: it has layers 0..{depth - 1}")


def _freeze_all_but(model: nn.Module, trained: dict[str, nn.Parameter]) -> dict[str, bool]:
    """Give gradients only to the trained weights; returns the previous flags to restore them."""
    previous = {name: p.requires_grad for name, p in model.named_parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in trained.values():
        parameter.requires_grad_(True)
    return previous


def _make_optimizer(parameters: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    # The reference used transformers' old AdamW defaults: no weight decay, eps 1e-6.
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, eps=1e-6)


def unlearn(config: UnlearnConfig, *, model: nn.Module | None = None, tokenizer=None,
            callbacks: tuple[Callback, ...] = (), progress: bool = True) -> UnlearnResult:
    """Run RMU or Adaptive RMU as ``config`` says.

    With ``model``/``tokenizer`` given, they are used (and updated in place) instead of loading
    ``config.model``. With ``config.output`` set, a complete checkpoint is written there atomically.
    ``callbacks`` receive each step's record (an exception raised by one stops the run).
    """
    started = time.perf_counter()
    plan = checkpoint.OutputPlan.check(config)  # before anything slow: refuse a finished output
    corpora = _read_corpora(config)
    device = resolve_device(config.device)
    loaded_from_source = model is None
    if loaded_from_source:
        _check_layer_before_loading(config)
        model, tokenizer = _load(config, device)
    if tokenizer is None:
        raise UnlearnError("pass the tokenizer together with the model")
    prepare_tokenizer(tokenizer)
    model.eval()  # the reference never enables dropout
    structure = find_structure(model)
    if config.layer >= structure.num_layers:
        raise UnlearnError(
            f"--layer {config.layer} is outside the model: it has layers 0..{structure.num_layers - 1}"
        )
    trained = select_parameters(model, structure, config.update_layers, config.params)
    original = {name: p.detach().clone() for name, p in trained.items()}
    previous_flags = _freeze_all_but(model, trained)
    runner = LayerRunner(model, structure, config.update_layers[0], config.layer, original)

    topics = config.topics
    if config.control_vectors:
        vectors = rules.load_control_vectors(config.control_vectors, topics, structure.hidden_size)
    else:
        vectors = rules.random_control_vectors(topics, structure.hidden_size, config.seed)
    steps = min(config.steps, corpora.available_steps())
    batches = _tokenize_needed(corpora, tokenizer, config, steps)
    coefficients = _fixed_coefficients(config, runner, batches, device)

    optimizer = _make_optimizer(list(trained.values()), config.lr)
    noise = torch.Generator().manual_seed(config.noise_seed if config.noise_seed is not None else config.seed)
    records: list[dict] = []
    start = 0
    if plan.resuming:
        start, records = plan.load_state(trained, optimizer, noise)
    plan.begin(vectors)

    targets = {t: vectors[t].to(device, torch.float32) for t in topics}
    bar = tqdm(range(start, steps), total=steps, initial=start, desc="unlearning", disable=not progress)
    try:
        for step in bar:
            topic_index = step % len(topics)
            forget_batch, retain_batch = (b.to(device) for b in batches[topic_index][step // len(topics)])
            record = _step(config, runner, optimizer, noise, step, topics[topic_index], topic_index,
                           forget_batch, retain_batch, targets[topics[topic_index]], coefficients)
            records.append(record)
            bar.set_postfix(topic=record["topic"], forget=f"{record['forget_loss']:.4g}",
                            retain=f"{record['retain_loss']:.4g}", coeff=f"{record['coeff']:.4g}")
            for callback in callbacks:
                callback(record)
            if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < steps:
                plan.save_state(step + 1, records, trained, optimizer, noise)
    finally:
        bar.close()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(previous_flags[name])

    result = UnlearnResult(
        config=config, model=model, tokenizer=tokenizer, records=records, coefficients=coefficients,
        control_vectors=vectors, trained_parameters=list(trained), original_weights=original,
        loaded_from_source=loaded_from_source,
    )
    result.seconds = time.perf_counter() - started
    if config.output:
        result.output = plan.finish(result, structure)
    return result


def _tokenize_needed(corpora: _Corpora, tokenizer, config: UnlearnConfig, steps: int):
    """topic -> batch index -> (forget batch, retain batch), for the batches the run will use."""
    topics = len(config.topics)
    tokenized_retain: dict[int, dict[int, TokenBatch]] = {}
    batches = []
    for t in range(topics):
        used = range(len(range(t, steps, topics)))  # step s uses batch s // topics of topic s % topics
        retain_list = corpora.retain[t]
        cache = tokenized_retain.setdefault(id(retain_list), {})
        pairs = []
        for b in used:
            if b not in cache:
                cache[b] = tokenize(tokenizer, retain_list[b], config.retain_max_len)
            pairs.append((tokenize(tokenizer, corpora.forget[t][b], config.max_len[t]), cache[b]))
        batches.append(pairs)
    return batches


def _fixed_coefficients(config: UnlearnConfig, runner: LayerRunner, batches, device) -> dict[str, float | None]:
    """Per topic: c for RMU, the first-batch coefficient for Adaptive RMU, None for per-sample."""
    coefficients: dict[str, float | None] = {}
    for index, topic in enumerate(config.topics):
        if config.method == "rmu":
            coefficients[topic] = float(config.steering_coeff[index])
        elif config.adaptive_rule == "per-sample" or not batches[index]:
            coefficients[topic] = None
        else:
            forget_batch = batches[index][0][0].to(device)
            frozen = runner.frozen(forget_batch)
            mask = forget_batch.attention_mask if config.mask_padding else None
            coefficients[topic] = rules.first_batch_coefficient(config.beta[index], frozen.output, mask)
    return coefficients


def _step(config: UnlearnConfig, runner: LayerRunner, optimizer, noise: torch.Generator, step: int,
          topic: str, topic_index: int, forget: TokenBatch, retain: TokenBatch, u: torch.Tensor,
          coefficients: dict[str, float | None]) -> dict:
    forget_mask = forget.attention_mask if config.mask_padding else None
    retain_mask = retain.attention_mask if config.mask_padding else None
    frozen_forget = runner.frozen(forget)
    frozen_retain = runner.frozen(retain)

    if coefficients[topic] is None:  # Adaptive RMU, per-sample rule
        coeff = rules.per_sample_coefficients(config.beta[topic_index], frozen_forget.output, forget_mask)
    else:
        coeff = torch.full((forget.input_ids.shape[0],), coefficients[topic], device=u.device)
    forget_target = coeff.to(u.device)[:, None, None] * u

    retain_target = frozen_retain.output.float()
    if config.noise > 0:
        sample = torch.randn(retain_target.shape, generator=noise, dtype=torch.float32)
        retain_target = retain_target + config.noise * sample.to(retain_target.device)

    optimizer.zero_grad(set_to_none=True)
    # Two backward passes (forget, then retain) sum the same gradient with half the live activations.
    updated_forget = runner.updated(frozen_forget)
    forget_loss = masked_mse(updated_forget, forget_target, forget_mask)
    _check_finite(forget_loss, "forget", step, topic)
    forget_loss.backward()
    updated_retain = runner.updated(frozen_retain)
    retain_loss = config.alpha[topic_index] * masked_mse(updated_retain, retain_target, retain_mask)
    _check_finite(retain_loss, "retain", step, topic)
    retain_loss.backward()
    optimizer.step()

    real = forget.attention_mask
    return {
        "step": step,
        "topic": topic,
        "forget_loss": forget_loss.item(),
        "retain_loss": retain_loss.item(),
        "coeff": float(coeff.mean()),
        "forget_norm": float(rules.mean_token_norm(updated_forget.detach(), real).mean()),
        "frozen_forget_norm": float(rules.mean_token_norm(frozen_forget.output, real).mean()),
    }


def _check_finite(loss: torch.Tensor, which: str, step: int, topic: str) -> None:
    if not math.isfinite(loss.item()):
        raise UnlearnError(
            f"the {which} loss is {loss.item()} at step {step} (topic '{topic}'); the run stopped and "
            "no checkpoint was written. Lower --lr or the coefficient, or use --dtype float32."
        )
