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

Precision and memory switches:

* ``dtype`` (float32, bfloat16, float16) is the dtype the model is loaded and run in. Losses are
  always accumulated in float32 (``masked_mse``). In half precision the optimizer steps float32
  master copies of the trained tensors (AdamW moments in float32 too) and copies them back into
  the model after each step: at lr 5e-5 most updates are below bfloat16's rounding step (2^-8
  relative) and would be lost if AdamW stepped the half-precision tensors directly. float16 has
  no loss scaling here, so small gradients may underflow: prefer bfloat16.
* ``gradient_checkpointing`` keeps only each updated layer's input during the forward pass and
  recomputes the layer in backward (``torch.utils.checkpoint``, non-reentrant): the activation
  memory of layers first..l no longer grows with their count, for one extra forward of them.
  Same numbers as without.
* Running across processes (DDP, FSDP2): see :mod:`rmu.distributed`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rmu import checkpoint, distributed, keywords, rules
from rmu.config import UnlearnConfig
from rmu.data import TokenBatch, consecutive_batches, prepare_tokenizer, read_corpus, tokenize
from rmu.structure import ModelStructure, find_structure, layer_hidden, select_parameters


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


class LayerRunner:
    """Runs layers 0..l of a model: frozen (original weights, no grad) or updated (with grad)."""

    def __init__(self, model: nn.Module, structure: ModelStructure, first: int, last: int,
                 frozen_weights: dict[str, torch.Tensor], gradient_checkpointing: bool = False):
        self.model = model
        self.decoder_layers = structure.layers
        self.first = first
        self.stack = distributed.UpdatedLayers([structure.layers[i] for i in range(first, last + 1)],
                                               gradient_checkpointing)
        self.updated_module: nn.Module = self.stack  # DDP / FSDP wrap it when distributed
        self.frozen_weights = frozen_weights
        self.frozen_copy: list[nn.Module] | None = None  # under FSDP, runs in place of layers first..l

    def distribute(self, ranks: distributed.Ranks, fsdp: bool, frozen_copy: list[nn.Module] | None = None) -> None:
        """Wrap the updated layers for data-parallel (DDP) or sharded (FSDP2) training.

        ``frozen_copy``: sharded frozen layers that :func:`distributed.load_sharded` already built.
        """
        if fsdp:
            self.updated_module, self.frozen_copy = distributed.shard_updated_layers(self.stack, ranks, frozen_copy)
        elif ranks.distributed:
            self.updated_module = distributed.wrap_data_parallel(self.stack, ranks)

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
        with self._frozen_layers_in_place() as (layers, weights):
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

        def record_output_and_stop(module, args, kwargs, output):
            captured["output"] = layer_hidden(output)
            raise _StopForward

        handles = [layer.register_forward_pre_hook(record_inputs, with_kwargs=True) for layer in layers]
        handles.append(layers[-1].register_forward_hook(record_output_and_stop, with_kwargs=True))
        try:
            with torch.no_grad():
                torch.func.functional_call(
                    self.model, weights, (),
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
        return self.updated_module(frozen.hidden_in, frozen.calls)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over batch x tokens x hidden (float32); over real tokens only with a mask."""
    prediction, target = prediction.float(), target.float().expand_as(prediction)
    if mask is None:
        return F.mse_loss(prediction, target)
    weights = mask.to(prediction.dtype).unsqueeze(-1)
    # clamp: a rank whose rows hold no position (all masked) contributes 0, with weight 0 anyway
    return ((prediction - target) ** 2 * weights).sum() / (weights.sum().clamp_min(1) * prediction.shape[-1])


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
    # The trained tensors, whole: views of the model's own (gathered copies under FSDP).
    final_weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    keywords: dict | None = None  # --keyword-robust: the keywords and augmentation used (rmu.keywords)

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
    keywords: dict | None = None  # what --keyword-robust inserted into the retain documents

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
    corpora = _Corpora(forget, retain)
    if config.keyword_robust:  # issue #12: retain documents that mention forget keywords (rmu.keywords)
        corpora = keywords.augment_corpora(config, corpora)
    return corpora


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


class TrainedTensors:
    """The trained tensors in the model and the float32 copies the optimizer steps.

    For a float32 model the copies are the model's own parameters; in half precision they are
    float32 master copies (see the module docstring for why).
    """

    def __init__(self, in_model: dict[str, nn.Parameter]):
        self.in_model = in_model
        self.has_master = any(p.dtype != torch.float32 for p in in_model.values())
        self.master = (
            {n: nn.Parameter(p.detach().float()) for n, p in in_model.items()} if self.has_master else in_model
        )

    def zero_grad(self) -> None:
        for parameter in {*self.in_model.values(), *self.master.values()}:
            parameter.grad = None

    def gradients_to_master(self) -> None:
        if self.has_master:
            for name, parameter in self.in_model.items():
                self.master[name].grad = parameter.grad.float()

    def master_to_model(self) -> None:
        if self.has_master:
            with torch.no_grad():
                for name, parameter in self.in_model.items():
                    parameter.copy_(self.master[name])


def _make_optimizer(parameters: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    # The reference used transformers' old AdamW defaults: no weight decay, eps 1e-6.
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, eps=1e-6)


def unlearn(config: UnlearnConfig, *, model: nn.Module | None = None, tokenizer=None,
            callbacks: tuple[Callback, ...] = (), progress: bool = True) -> UnlearnResult:
    """Run RMU or Adaptive RMU as ``config`` says.

    With ``model``/``tokenizer`` given, they are used (and updated in place) instead of loading
    ``config.model``. With ``config.output`` set, a complete checkpoint is written there atomically.
    ``callbacks`` receive each step's record (an exception raised by one stops the run). Launched by
    torchrun, every rank calls this and gets the same records (see :mod:`rmu.distributed`).
    """
    with distributed.session(config.device) as ranks:
        return _unlearn(config, ranks, model, tokenizer, callbacks, progress and ranks.is_main)


def _unlearn(config: UnlearnConfig, ranks: distributed.Ranks, model: nn.Module | None, tokenizer,
             callbacks: tuple[Callback, ...], progress: bool) -> UnlearnResult:
    started = time.perf_counter()
    # Before anything slow: refuse a finished output. Only rank 0 clears an old partial run.
    plan = checkpoint.OutputPlan.check(config, may_delete=ranks.is_main)
    if config.fsdp and not ranks.distributed:
        raise UnlearnError("--fsdp shards the updated layers across processes: launch with --nproc N or torchrun")
    if config.fsdp and model is not None:
        raise UnlearnError("--fsdp needs the engine to load config.model itself, not a model passed in memory")
    corpora = _read_corpora(config)
    device = ranks.device
    loaded_from_source = model is None
    frozen_copy = None  # built while loading when FSDP shards layers as they are read
    if loaded_from_source:
        _check_layer_before_loading(config)
        if config.fsdp and not config.full_load:
            model, tokenizer, frozen_copy = distributed.load_sharded(
                config.model, config.layer, config.update_layers[0], ranks, getattr(torch, config.dtype),
                config.trust_remote_code)
        else:
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
    runner = LayerRunner(model, structure, config.update_layers[0], config.layer, original,
                         config.gradient_checkpointing)
    runner.distribute(ranks, config.fsdp, frozen_copy)
    parameters = dict(model.named_parameters())  # FSDP replaced the trained parameters by shards
    tensors = TrainedTensors({name: parameters[name] for name in trained})

    topics = config.topics
    if config.control_vectors:
        vectors = rules.load_control_vectors(config.control_vectors, topics, structure.hidden_size)
    else:
        vectors = rules.random_control_vectors(topics, structure.hidden_size, config.seed)
    steps = min(config.steps, corpora.available_steps())
    batches = _tokenize_needed(corpora, tokenizer, config, steps)
    coefficients = _fixed_coefficients(config, runner, batches, device)

    optimizer = _make_optimizer(list(tensors.master.values()), config.lr)
    noise = torch.Generator().manual_seed(config.noise_seed if config.noise_seed is not None else config.seed)
    records: list[dict] = []
    start = 0
    if plan.resuming:
        start, records = plan.load_state(tensors.master, optimizer, noise)
        tensors.master_to_model()
    if ranks.is_main:
        plan.begin(vectors)
        keywords.save_keywords(plan.output and plan.work, corpora.keywords)

    targets = {t: vectors[t].to(device, torch.float32) for t in topics}
    bar = tqdm(range(start, steps), total=steps, initial=start, desc="unlearning", disable=not progress)
    try:
        for step in bar:
            topic_index = step % len(topics)
            forget_batch, retain_batch = (b.to(device) for b in batches[topic_index][step // len(topics)])
            record = _step(config, runner, tensors, optimizer, noise, ranks, step, topics[topic_index], topic_index,
                           forget_batch, retain_batch, targets[topics[topic_index]], coefficients)
            records.append(record)
            bar.set_postfix(topic=record["topic"], forget=f"{record['forget_loss']:.4g}",
                            retain=f"{record['retain_loss']:.4g}", coeff=f"{record['coeff']:.4g}")
            for callback in callbacks:
                callback(record)
            if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < steps and ranks.is_main:
                plan.save_state(step + 1, records, tensors.master, optimizer, noise)
    finally:
        bar.close()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(previous_flags.get(name, parameter.requires_grad))

    result = UnlearnResult(
        config=config, model=model, tokenizer=tokenizer, records=records, coefficients=coefficients,
        control_vectors=vectors, trained_parameters=list(trained), original_weights=original,
        loaded_from_source=loaded_from_source,
        # Every rank takes part in gathering FSDP shards; plain tensors are shared, not copied.
        final_weights={n: distributed.full_tensor(p.detach()) for n, p in tensors.in_model.items()},
        keywords=corpora.keywords,
    )
    result.seconds = time.perf_counter() - started
    if config.output:
        result.output = plan.finish(result, structure) if ranks.is_main else plan.output
        ranks.barrier()  # no rank returns before the checkpoint exists
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
            mask = loss_mask(forget_batch, config)
            coefficients[topic] = rules.first_batch_coefficient(config.beta[index], frozen.output, mask)
    return coefficients


def _step(config: UnlearnConfig, runner: LayerRunner, tensors: TrainedTensors, optimizer, noise: torch.Generator,
          ranks: distributed.Ranks, step: int, topic: str, topic_index: int, forget: TokenBatch,
          retain: TokenBatch, u: torch.Tensor, coefficients: dict[str, float | None]) -> dict:
    # Each rank computes its share of the rows; in one process the share is the whole batch, weight 1.
    forget_rows, retain_rows = forget.input_ids.shape[0], retain.input_ids.shape[0]
    # Full-batch masks: checked and used for the rank shares, then sliced to this rank's rows.
    forget_mask, retain_mask = loss_mask(forget, config), loss_mask(retain, config)
    for mask, which in ((forget_mask, "forget"), (retain_mask, "retain")):
        if mask is not None and not mask.any():
            raise UnlearnError(
                f"step {step}: no position of the {which} batch is left for the loss (every document is one "
                "real token and --mask-first-token drops it); raise --min-len or drop --mask-first-token"
            )
    forget_share = ranks.share(forget_rows, forget_mask)
    retain_share = ranks.share(retain_rows, retain_mask)
    forget, retain = _rows(forget, forget_share.rows), _rows(retain, retain_share.rows)
    forget_mask = None if forget_mask is None else forget_mask[forget_share.rows]
    retain_mask = None if retain_mask is None else retain_mask[retain_share.rows]
    frozen_forget = runner.frozen(forget)
    frozen_retain = runner.frozen(retain)

    if coefficients[topic] is None:  # Adaptive RMU, per-sample rule
        coeff = rules.per_sample_coefficients(config.beta[topic_index], frozen_forget.output, forget_mask)
    else:
        coeff = torch.full((forget.input_ids.shape[0],), coefficients[topic], device=u.device)
    forget_target = coeff.to(u.device)[:, None, None] * u

    retain_target = frozen_retain.output.float()
    if config.noise > 0:
        # The whole batch's noise on every rank (same generator state), then this rank's rows.
        shape = (retain_rows, *retain_target.shape[1:])
        sample = torch.randn(shape, generator=noise, dtype=torch.float32)[retain_share.rows]
        retain_target = retain_target + config.noise * sample.to(retain_target.device)

    tensors.zero_grad()
    # Two backward passes (forget, then retain) sum the same gradient with half the live activations;
    # gradients are averaged across ranks once, in the second.
    gradient_scale = ranks.world_size  # DDP / FSDP divide the summed gradients by the world size
    with distributed.without_gradient_sync(runner.updated_module):
        updated_forget = runner.updated(frozen_forget)
        forget_error = masked_mse(updated_forget, forget_target, forget_mask)
        forget_loss = ranks.sum(forget_error.detach() * forget_share.weight)
        _check_finite(forget_loss, "forget", step, topic)
        (forget_error * (forget_share.weight * gradient_scale)).backward()
    updated_retain = runner.updated(frozen_retain)
    retain_error = config.alpha[topic_index] * masked_mse(updated_retain, retain_target, retain_mask)
    retain_loss = ranks.sum(retain_error.detach() * retain_share.weight)
    _check_finite(retain_loss, "retain", step, topic)
    (retain_error * (retain_share.weight * gradient_scale)).backward()
    tensors.gradients_to_master()
    optimizer.step()
    tensors.master_to_model()

    def batch_mean(per_row: torch.Tensor) -> float:
        return float(ranks.sum(per_row[: forget_share.count].float().sum()) / forget_rows)

    real = forget.attention_mask if forget_mask is None else forget_mask  # logged norms: over what the losses see
    return {
        "step": step,
        "topic": topic,
        "forget_loss": forget_loss.item(),
        "retain_loss": retain_loss.item(),
        "coeff": batch_mean(coeff),
        "forget_norm": batch_mean(rules.mean_token_norm(updated_forget.detach(), real)),
        "frozen_forget_norm": batch_mean(rules.mean_token_norm(frozen_forget.output, real)),
    }


def loss_mask(batch: TokenBatch, config: UnlearnConfig) -> torch.Tensor | None:
    """The positions the losses and norms use: None for all (the reference), else a 0/1 mask.

    ``mask_padding`` drops pads; ``mask_first_token`` drops each row's first real token, the
    attention sink, whose hidden state in models with massive activations (SmolLM2 from layer 11,
    Llama, Mistral) is 100x larger than the others' and would otherwise dominate every MSE.
    """
    if not (config.mask_padding or config.mask_first_token):
        return None
    attention = batch.attention_mask
    mask = attention.clone() if config.mask_padding else torch.ones_like(attention)
    if config.mask_first_token:
        first_real = attention.argmax(dim=1)  # left or right padding: the first 1 of each row
        mask[torch.arange(mask.shape[0], device=mask.device), first_real] = 0
    return mask


def _rows(batch: TokenBatch, rows: slice) -> TokenBatch:
    return TokenBatch(batch.input_ids[rows], batch.attention_mask[rows])


def _check_finite(loss: torch.Tensor, which: str, step: int, topic: str) -> None:
    if not math.isfinite(loss.item()):
        raise UnlearnError(
            f"the {which} loss is {loss.item()} at step {step} (topic '{topic}'); the run stopped and "
            "no checkpoint was written. Lower --lr or the coefficient, or use --dtype float32."
        )
