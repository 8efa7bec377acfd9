"""The unlearning engine: RMU and Adaptive RMU, computing only what the losses need.

The published scripts run two full model copies through every layer and the LM head to read one
hidden state. Here, per batch:

1. one no-grad pass of the model, with the ORIGINAL values of the trained weights swapped in
   (``torch.func.functional_call``), runs layers 0..l and stops there. It yields the frozen
   layer-l output (the retain target, the Adaptive RMU norm) and, captured at the first updated
   layer, the shared prefix: the hidden state entering it and the arguments the model passes to
   each layer (masks, rotary embeddings), which are identical for the frozen and updated models;
2. the updated layers (first updated .. l) run again with gradients, from that shared prefix.

(Both passes: :class:`rmu.runner.LayerRunner`. This module keeps the run itself: prepare, loop, finish.)

So the model is held once, plus a copy of only the trained tensors; nothing above layer l runs;
only the trained tensors get gradients. The losses are those of a plain two-model implementation
(rmu.testing.reference checks them step by step); the published scripts' own arithmetic
(optimizer, precision, data reading) is reached with the switches below or a recipe, and
tests/test_recipes.py checks it against transcriptions of those scripts.

Precision and memory switches:

* ``dtype`` (float32, bfloat16, float16, or auto: the checkpoint's own) is the dtype the model is
  loaded and run in. Losses are accumulated in float32 (``masked_mse``) unless ``loss_dtype:
  model``. In half precision the optimizer steps float32 master copies of the trained tensors
  (its moments in float32 too) and copies them back into the model after each step: at lr 5e-5
  most updates are below bfloat16's rounding step (2^-8 relative) and would be lost if the
  optimizer stepped the half-precision tensors directly (``master_weights: false`` does that, as
  the published scripts). float16 has no loss scaling here, so small gradients may underflow:
  prefer bfloat16.
* ``optimizer``: ``adamw`` is torch.optim.AdamW (eps 1e-6, no weight decay); ``adamw-legacy`` is
  transformers' removed AdamW that the published scripts step with (:mod:`rmu.optim`). They are
  not the same optimizer: the legacy one adds eps to the uncorrected sqrt(v).
* ``single_backward``: one backward of forget + alpha * retain, as the scripts; the default two
  backwards give the same gradient with half the live activations (the sum of the two gradient
  contributions may be formed in another order; in the bfloat16 CPU tests it was bit-identical).
* ``gradient_checkpointing`` keeps only each updated layer's input during the forward pass and
  recomputes the layer in backward (``torch.utils.checkpoint``, non-reentrant): the activation
  memory of layers first..l no longer grows with their count, for one extra forward of them.
  Same numbers as without.
* Running across processes (DDP, FSDP2): see :mod:`rmu.distributed`.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from rmu.progress import bar as tqdm, write as progress_write

from rmu import distributed, divergence, health, keywords, rules, run_folder, scale
from rmu.config import UnlearnConfig, resolve_device  # noqa: F401  (also rmu.engine's name)
from rmu.data import (Span, TokenBatch, consecutive_batches, prepare_tokenizer, read_corpus, read_corpus_as_published,
                      tokenize)
from rmu.errors import RmuError
from rmu.losses import loss_mask, masked_mse  # noqa: F401  (also rmu.engine's public names)
from rmu.losses import informative_dims, informative_vector, retain_dims, select_dims
from rmu.optim import make_optimizer
from rmu.runner import FrozenPass, LayerRunner, _LayerCall, trainable_only  # noqa: F401  (also rmu.engine's names)
from rmu.structure import ModelStructure, check_layer, find_structure, select_parameters


class UnlearnError(RmuError, RuntimeError):
    """The run cannot go on (bad layer, diverging loss, ...); the message says why and what to do."""


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
    health: dict | None = None  # rmu.health's report of the finished run (also in run.json)
    calibration: dict | None = None  # rmu.scale's measurements when config.auto is set
    keywords: dict | None = None  # --keyword-robust: the keywords and augmentation used (rmu.keywords)
    loss_dims: dict | None = None  # --loss-dims informative: the massive dimensions left out, per topic

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
    # --keyword-mask: per retain document (batched as retain) the inserted sentence's characters, or None
    retain_inserted: list[list[list[Span | None]]] | None = None
    # --keyword-forget-focus: per forget document (batched as forget) the characters the forget loss leaves out
    forget_excluded: list[list[list[list[Span]]]] | None = None

    def available_steps(self) -> int:
        # As WMDP's script: the shortest list of batches bounds the run (the Adaptive script would crash).
        return min(min(len(b) for b in self.forget), min(len(b) for b in self.retain))


def corpus_steps(config: UnlearnConfig) -> int:
    """The most steps a run of ``config`` takes: one pass over its shortest corpus (``rmu tune`` reports it)."""
    return _read_corpora(config).available_steps()


def _read_corpora(config: UnlearnConfig) -> _Corpora:
    retain_cache: dict[str, list[list[str]]] = {}
    forget, retain = [], []
    for index, topic in enumerate(config.topics):
        forget.append(consecutive_batches(_read(config, config.forget[topic], forget=True), config.batch_size))
        source = config.retain_for(index)
        if source not in retain_cache:
            retain_cache[source] = consecutive_batches(_read(config, source, forget=False), config.batch_size)
        retain.append(retain_cache[source])
    corpora = _Corpora(forget, retain)
    if config.keyword_robust:  # issue #12: retain documents that mention forget keywords (rmu.keywords)
        corpora = keywords.augment_corpora(config, corpora)
    return corpora


def _read(config: UnlearnConfig, source: str, forget: bool) -> list[str]:
    if config.corpus_reading == "original":
        return read_corpus_as_published(source, config.min_len, forget)
    return read_corpus(source, config.min_len)


def load_dtype(config: UnlearnConfig) -> torch.dtype:
    """The dtype to load the model in: the configured one, or with ``auto`` the checkpoint's own."""
    if config.dtype != "auto":
        return getattr(torch, config.dtype)
    from transformers import AutoConfig

    from rmu.loading import resolve_checkpoint

    model_config = AutoConfig.from_pretrained(resolve_checkpoint(config.model),
                                              trust_remote_code=config.trust_remote_code)
    dtype = getattr(model_config.get_text_config(), "dtype", None) or getattr(model_config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _slow_tokenizer(config: UnlearnConfig):
    """The checkpoint's slow (Python) tokenizer, as the published scripts load it (use_fast=False)."""
    from transformers import AutoTokenizer

    from rmu.loading import resolve_checkpoint

    return AutoTokenizer.from_pretrained(resolve_checkpoint(config.model), use_fast=False,
                                         trust_remote_code=config.trust_remote_code)


def _load(config: UnlearnConfig, ranks: distributed.Ranks):
    """``(model, tokenizer, frozen_copy)`` from the config's source: layers 0..l only unless full_load.

    With --fsdp the layers are sharded as they are read, and ``frozen_copy`` (sharded frozen copies
    of the updated layers) is built with them; otherwise it is None.
    """
    from rmu import loading

    if config.fsdp and not config.full_load:
        return loading.load_sharded(config.model, config.layer, config.update_layers[0],
                                    distributed.device_mesh(ranks), ranks.device, load_dtype(config),
                                    config.trust_remote_code)
    model, tokenizer = loading.load_model(
        config.model, upto_layer=None if config.full_load else config.layer, dtype=load_dtype(config),
        device=ranks.device, trust_remote_code=config.trust_remote_code,
    )
    return model, tokenizer, None


def _check_layer_before_loading(config: UnlearnConfig) -> None:
    """Catch what cannot run (layer, lengths, --params, checkpoint files) before the weights are read."""
    from rmu.preflight import check_run

    check_run(config)


class TrainedTensors:
    """The trained tensors in the model and the tensors the optimizer steps.

    For a float32 model, or with ``master_weights`` off, the optimizer steps the model's own
    parameters; in half precision it steps float32 master copies (see the module docstring for why).
    """

    def __init__(self, in_model: dict[str, nn.Parameter], master_weights: bool = True):
        self.in_model = in_model
        self.has_master = master_weights and any(p.dtype != torch.float32 for p in in_model.values())
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


def unlearn(config: UnlearnConfig, *, model: nn.Module | None = None, tokenizer=None,
            callbacks: tuple[Callback, ...] = (), progress: bool = True) -> UnlearnResult:
    """Run RMU or Adaptive RMU as ``config`` says.

    With ``model``/``tokenizer`` given, they are used (and updated in place) instead of loading
    ``config.model``. With ``config.output`` set, a complete checkpoint is written there atomically.
    ``callbacks`` receive each step's record (an exception raised by one stops the run). Launched by
    torchrun, every rank calls this and gets the same records (see :mod:`rmu.distributed`).
    """
    started = time.perf_counter()
    # Before anything slow: refuse an output rmu must not write, and lock it (rank 0) until the end.
    with distributed.session(config.device) as ranks, run_folder.OutputPlan.claim(config, ranks.is_main) as plan:
        return _unlearn(config, plan, ranks, model, tokenizer, callbacks, progress and ranks.is_main, started)


def _unlearn(config: UnlearnConfig, plan: run_folder.OutputPlan, ranks: distributed.Ranks, model: nn.Module | None,
             tokenizer, callbacks: tuple[Callback, ...], progress: bool, started: float) -> UnlearnResult:
    """Prepare (load, tokenize, control vectors, coefficients), loop over the steps, finish (health, save)."""
    loaded_from_source = model is None
    with _prepared(config, plan, ranks, model, tokenizer) as run:
        _loop(run, plan, callbacks, progress)
    return _finish(run, plan, loaded_from_source, progress, started)


@contextmanager
def _prepared(config: UnlearnConfig, plan: run_folder.OutputPlan, ranks: distributed.Ranks, model: nn.Module | None,
              tokenizer):
    """The prepared run (model loaded, batches tokenized, calibration done), with only its trained
    tensors requiring gradients while the block runs: what a run and :func:`calibrate` both start from."""
    _check_launch(config, ranks, model)
    corpora = _read_corpora(config)
    model, tokenizer, frozen_copy = _model_and_tokenizer(config, ranks, model, tokenizer)
    structure = find_structure(model)
    check_layer(config.layer, structure.num_layers, option="--layer", error=UnlearnError)
    trained = select_parameters(model, structure, config.update_layers, config.params)
    original = {name: p.detach().clone() for name, p in trained.items()}
    with trainable_only(model, trained):
        yield _prepare(config, plan, ranks, model, tokenizer, structure, original, frozen_copy, corpora)


def calibrate(config: UnlearnConfig, *, model: nn.Module, tokenizer) -> dict:
    """The scale rule's calibration (``config.auto``) of the run ``config`` describes, without the run:
    what ``rmu tune`` derives its search ranges from. The model's weights are left as they were (every
    probe puts them back); nothing is written."""
    if not config.auto:
        raise UnlearnError("calibrate needs settings to calibrate: set auto (e.g. auto=['lr', 'alpha', 'coeff'])")
    config = config.model_copy(update={"output": None, "resume": False, "save_every": 0})
    with distributed.session(config.device) as ranks, run_folder.OutputPlan.claim(config, ranks.is_main) as plan, \
            _prepared(config, plan, ranks, model, tokenizer) as run:
        return run.calibration


def _check_launch(config: UnlearnConfig, ranks: distributed.Ranks, model: nn.Module | None) -> None:
    if config.fsdp and not ranks.distributed:
        raise UnlearnError("--fsdp shards the updated layers across processes: launch with --nproc N or torchrun")
    if config.fsdp and model is not None:
        raise UnlearnError("--fsdp needs the engine to load config.model itself, not a model passed in memory")


def _model_and_tokenizer(config: UnlearnConfig, ranks: distributed.Ranks, model: nn.Module | None, tokenizer):
    """``(model in eval mode, prepared tokenizer, frozen_copy)``: the ones passed in, or loaded from config.model.

    ``frozen_copy`` is built while loading when FSDP shards layers as they are read, else None.
    """
    frozen_copy = None
    if model is None:
        _check_layer_before_loading(config)
        model, tokenizer, frozen_copy = _load(config, ranks)
        if config.slow_tokenizer:
            tokenizer = _slow_tokenizer(config)
    if tokenizer is None:
        raise UnlearnError("pass the tokenizer together with the model")
    prepare_tokenizer(tokenizer, force_eos_pad=config.pad_eos)
    model.eval()  # the frozen pass never uses dropout; train_mode switches the updated layers below
    return model, tokenizer, frozen_copy


@dataclass
class _StepContext:
    """What every step uses, the same over the whole run (Adaptive RMU's coefficients taken from the
    updated model are filled in at each topic's first step)."""

    config: UnlearnConfig
    ranks: distributed.Ranks
    runner: LayerRunner
    tensors: TrainedTensors
    optimizer: torch.optim.Optimizer
    noise: torch.Generator
    coefficients: dict[str, float | None]
    targets: dict[str, torch.Tensor]  # u per topic, on the device, in the dtype the targets are formed in
    # --loss-dims informative: per topic the hidden dimensions the losses use (None: all of them)
    dims: dict[str, torch.Tensor | None] = field(default_factory=dict)


@dataclass
class _Run:
    """A prepared run: what the loop steps through and what the finished result is made of."""

    context: _StepContext
    model: nn.Module
    tokenizer: object
    structure: ModelStructure
    original: dict[str, torch.Tensor]
    vectors: dict[str, torch.Tensor]
    batches: list  # topic -> batch index -> (forget batch, retain batch)
    steps: int
    start: int  # the first step to run (later than 0 when resuming)
    records: list[dict]
    keywords: dict | None
    calibration: dict | None
    loss_dims: dict | None = None

    @property
    def config(self) -> UnlearnConfig:  # the calibrated one with --auto
        return self.context.config


def _prepare(config: UnlearnConfig, plan: run_folder.OutputPlan, ranks: distributed.Ranks, model: nn.Module,
             tokenizer, structure: ModelStructure, original: dict[str, torch.Tensor], frozen_copy,
             corpora: _Corpora) -> _Run:
    """Runner, trained tensors, control vectors, token batches, coefficients, optimizer; resume state.

    ``original``: the original values of the trained tensors, by name.
    """
    device = ranks.device
    runner = LayerRunner(model, structure, config.update_layers[0], config.layer, original,
                         config.gradient_checkpointing)
    distributed.distribute(runner, ranks, config.fsdp, frozen_copy)
    if config.train_mode:
        runner.updated_module.train()  # as the published scripts' updated_model.train()
    parameters = dict(model.named_parameters())  # FSDP replaced the trained parameters by shards
    tensors = TrainedTensors({name: parameters[name] for name in original}, config.master_weights)
    model_dtype = next(iter(tensors.in_model.values())).dtype

    topics = config.topics
    vectors = rules.control_vectors(config, topics, structure.hidden_size, model_dtype, device)
    steps = min(config.steps, corpora.available_steps())
    batches = _tokenize_needed(corpora, tokenizer, config, steps)
    calibration = None
    if config.auto:  # the scale rule replaces the chosen settings by calibrated ones (rmu.scale)
        if ranks.distributed:
            raise UnlearnError("--auto calibrates in one process: run it once without --nproc/torchrun and "
                               "pass the values it records in run.json ('calibration')")
        config, calibration = scale.calibrate(config, runner, tensors.in_model, batches, vectors, steps, device)
    dims, loss_dims = _loss_dims(config, runner, batches, device, calibration, structure.hidden_size)
    coefficients = _fixed_coefficients(config, runner, batches, device, dims)

    noise = torch.Generator().manual_seed(config.noise_seed if config.noise_seed is not None else config.seed)
    # The published draw scales u by c in the model's dtype; rmu's in float32.
    target_dtype = model_dtype if config.vector_draw == "original" else torch.float32
    targets = {t: informative_vector(vectors[t], dims[t]).to(device, target_dtype) for t in topics}
    context = _StepContext(config, ranks, runner, tensors, None, noise, coefficients, targets, dims)
    if calibration is not None and "lr" in config.auto and config.auto_lr == "steps":
        config = _lr_from_real_steps(context, batches, steps, calibration)
        context.config = config

    context.optimizer = make_optimizer(config.optimizer, list(tensors.master.values()), config.lr)
    records: list[dict] = []
    start = 0
    if plan.resuming:
        start, records = plan.load_state(tensors.master, context.optimizer, noise)
        tensors.master_to_model()
        _coefficients_from_records(config, coefficients, records)
    if ranks.is_main:
        plan.begin(vectors)
        keywords.save_keywords(plan.output and plan.work, corpora.keywords)
    return _Run(context, model, tokenizer, structure, original, vectors, batches, steps, start, records,
                corpora.keywords, calibration, loss_dims)


def _lr_from_real_steps(context: _StepContext, batches, steps: int, calibration: dict) -> UnlearnConfig:
    """``--auto-lr steps``: the config with the one-step rule's lr checked against real steps of this run
    (rmu.scale.lr_from_real_steps); what the probes measured goes into ``calibration["real_steps"]``."""
    config, tensors, device = context.config, context.tensors, context.ranks.device
    topics = config.topics
    started = time.perf_counter()
    taken = 0

    def probe(lr: float, steps_per_topic: int) -> list[dict] | None:
        nonlocal taken
        saved = {name: p.detach().clone() for name, p in {**tensors.in_model, **tensors.master}.items()}
        noise_state = context.noise.get_state()
        probe_context = replace(context, config=config.model_copy(update={"lr": lr}),
                                optimizer=make_optimizer(config.optimizer, list(tensors.master.values()), lr),
                                coefficients=dict(context.coefficients))
        # fork_rng: dropout (--train-mode) and the published noise draw use torch's own generators
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            try:
                for step in range(steps_per_topic * len(topics)):
                    pairs = batches[step % len(topics)]
                    forget, retain = (b.to(device) for b in pairs[(step // len(topics)) % len(pairs)])
                    _step(probe_context, step, forget, retain)
                    taken += 1
                return [health.measure_topic(
                    context.runner, topic, batches[index], context.targets[topic].float(),
                    probe_context.coefficients[topic], config.beta[index], lambda b: loss_mask(b, config), device,
                    [], context.dims.get(topic), config.loss_dims).__dict__ for index, topic in enumerate(topics)]
            except UnlearnError:  # a loss that is not finite: this lr is too large
                return None
            finally:
                with torch.no_grad():
                    for name, p in {**tensors.in_model, **tensors.master}.items():
                        p.copy_(saved[name])
                tensors.zero_grad()
                context.noise.set_state(noise_state)

    lr, measured = scale.lr_from_real_steps(config.lr, steps, len(topics), probe)
    calibration["real_steps"] = measured | {"steps_run": taken, "seconds": round(time.perf_counter() - started, 1)}
    calibration["chosen"]["lr"] = lr
    return config.model_copy(update={"lr": lr})


def _loss_dims(config: UnlearnConfig, runner: LayerRunner, batches, device, calibration: dict | None,
               hidden_size: int) -> tuple[dict[str, torch.Tensor | None], dict | None]:
    """Per topic the dimensions the forget loss uses (None: all), and what run.json records of them.

    ``--loss-dims informative`` / ``forget-informative`` leave out the massive dimensions of the topic's
    first frozen forget batch: the calibration's (``--auto``) when it ran, else measured here the same way.
    """
    if config.loss_dims == "all":
        return dict.fromkeys(config.topics), None
    if calibration is not None:
        massive = {t["topic"]: t["massive_dims"] for t in calibration["topics"]}
    else:
        massive = scale.massive_dims(config, runner, batches, device)
    dims = {topic: informative_dims(hidden_size, massive[topic], device) for topic in config.topics}
    return dims, {"loss_dims": config.loss_dims, "massive_dims": massive,
                  "informative_dims": {topic: int(d.numel()) for topic, d in dims.items()}}


def _loop(run: _Run, plan: run_folder.OutputPlan, callbacks: tuple[Callback, ...], progress: bool) -> None:
    """The steps from run.start on, each record appended to run.records; resumable state every save_every."""
    context, config, steps = run.context, run.config, run.steps
    topics, device, ranks = config.topics, context.ranks.device, context.ranks
    bar = tqdm(range(run.start, steps), total=steps, initial=run.start, desc="unlearning", disable=not progress)
    try:
        for step in bar:
            forget_batch, retain_batch = (b.to(device) for b in run.batches[step % len(topics)][step // len(topics)])
            record = _step(context, step, forget_batch, retain_batch)
            run.records.append(record)
            if problem := divergence.check(run.records, config):
                raise UnlearnError(problem)
            bar.set_postfix(topic=record["topic"], forget=f"{record['forget_loss']:.4g}",
                            retain=f"{record['retain_loss']:.4g}", coeff=f"{record['coeff']:.4g}")
            for callback in callbacks:
                callback(record)
            if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < steps and ranks.is_main:
                plan.save_state(step + 1, run.records, context.tensors.master, context.optimizer, context.noise)
    finally:
        bar.close()


def _finish(run: _Run, plan: run_folder.OutputPlan, loaded_from_source: bool, progress: bool,
            started: float) -> UnlearnResult:
    """The result, its health report, and (with an output) the checkpoint, model card and run.json."""
    context, config = run.context, run.config
    result = UnlearnResult(
        config=config, model=run.model, tokenizer=run.tokenizer, records=run.records,
        coefficients=context.coefficients, control_vectors=run.vectors, trained_parameters=list(run.original),
        original_weights=run.original, loaded_from_source=loaded_from_source,
        # Every rank takes part in gathering FSDP shards; plain tensors are shared, not copied.
        final_weights={n: distributed.full_tensor(p.detach()) for n, p in context.tensors.in_model.items()},
        keywords=run.keywords, loss_dims=run.loss_dims,
    )
    result.calibration = run.calibration
    report = health.diagnose(config, context.runner, run.batches, run.vectors, context.coefficients, run.records,
                             context.ranks.device, lambda batch: loss_mask(batch, config), context.dims)
    result.health = report.to_dict()
    if progress:
        progress_write("\n".join(report.lines()), file=sys.stderr)
    result.seconds = time.perf_counter() - started
    if config.output:
        result.output = plan.finish(result, run.structure) if context.ranks.is_main else plan.output
        context.ranks.barrier()  # no rank returns before the checkpoint exists
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
                spans = corpora.retain_inserted[t][b] if corpora.retain_inserted else None
                cache[b] = tokenize(tokenizer, retain_list[b], config.retain_max_len, spans, config.keyword_window)
                if spans is not None and config.keyword_retain_weight != 1:  # the augmented rows count less
                    cache[b].row_weights = torch.tensor([1.0 if s is None else config.keyword_retain_weight
                                                         for s in spans])
            forget_spans = corpora.forget_excluded[t][b] if corpora.forget_excluded else None
            pairs.append((tokenize(tokenizer, corpora.forget[t][b], config.max_len[t], forget_spans), cache[b]))
        batches.append(pairs)
    return batches


def _coefficient_from_updated(config: UnlearnConfig) -> bool:
    """Adaptive RMU as the authors' code: the coefficient comes from the updated model at step t."""
    return config.method == "adaptive" and config.adaptive_rule == "first-batch" and config.adaptive_source == "updated"


def _fixed_coefficients(config: UnlearnConfig, runner: LayerRunner, batches, device,
                        dims: dict[str, torch.Tensor | None]) -> dict[str, float | None]:
    """Per topic: c for RMU, the first-batch coefficient for Adaptive RMU (the norm over the topic's
    ``dims``); None for per-sample and for coefficients taken from the updated model during the run."""
    coefficients: dict[str, float | None] = {}
    for index, topic in enumerate(config.topics):
        if config.method == "rmu":
            coefficients[topic] = float(config.steering_coeff[index])
        elif config.adaptive_rule == "per-sample" or _coefficient_from_updated(config) or not batches[index]:
            coefficients[topic] = None
        else:
            forget_batch = batches[index][0][0].to(device)
            frozen = runner.frozen(forget_batch)
            mask = loss_mask(forget_batch, config)
            coefficients[topic] = rules.first_batch_coefficient(config.beta[index],
                                                                select_dims(frozen.output, dims[topic]), mask)
    return coefficients


def _coefficients_from_records(config: UnlearnConfig, coefficients: dict, records: list[dict]) -> None:
    """On resume: a coefficient taken from the updated model at step t is in step t's record."""
    if _coefficient_from_updated(config):
        for index, topic in enumerate(config.topics):
            if index < len(records):
                coefficients[topic] = records[index]["coeff"]


def _updated_coefficient(config: UnlearnConfig, ranks: distributed.Ranks, topic_index: int,
                         updated_forget: torch.Tensor, mask: torch.Tensor | None, rows: int) -> float:
    """beta * batch mean of the token-mean per-token norm of the updated output, in the output's dtype
    as the authors compute it (their coefficient at the topic's first step)."""
    hidden = updated_forget.detach()
    per_row = hidden.norm(dim=-1).mean(dim=1) if mask is None else rules.mean_token_norm(hidden, mask)
    if ranks.distributed:
        value = float(ranks.sum(per_row.float().sum())) / rows
    else:
        value = per_row.mean(dim=0).item()
    return value * config.beta[topic_index]


def _forget_target(config: UnlearnConfig, coeff: torch.Tensor, scalar: float | None, u: torch.Tensor) -> torch.Tensor:
    """c * u per row. With the published draw, a single coefficient multiplies u in u's (model) dtype
    as a Python number, as the scripts' ``control_vec * coeff``."""
    if config.vector_draw == "original" and scalar is not None:
        return u * scalar
    return coeff.to(u.device, u.dtype)[:, None, None] * u


def _retain_target(config: UnlearnConfig, frozen: torch.Tensor, noise: torch.Generator, rows: int,
                   share: slice) -> torch.Tensor:
    """The frozen retain output, plus nu * N(0, I) with random noise augmentation."""
    if config.noise <= 0:
        return frozen
    shape = (rows, *frozen.shape[1:])  # the whole batch's noise on every rank, then this rank's rows
    if config.vector_draw == "original":
        # as llmu-robustness: randn_like from torch's global generator, in the activations' dtype and device
        sample = torch.randn(shape, dtype=frozen.dtype, device=frozen.device)[share]
        return frozen + sample * config.noise
    sample = torch.randn(shape, generator=noise, dtype=torch.float32)[share]
    return frozen.float() + config.noise * sample.to(frozen.device)


def _step(context: _StepContext, step: int, forget: TokenBatch, retain: TokenBatch) -> dict:
    config, runner, tensors, ranks = context.config, context.runner, context.tensors, context.ranks
    coefficients = context.coefficients
    topic_index = step % len(config.topics)  # topics take turns, one batch per step
    topic = config.topics[topic_index]
    u = context.targets[topic]
    dims = context.dims.get(topic)  # --loss-dims informative: the losses see these dimensions only
    retain_loss_dims = retain_dims(config.loss_dims, dims)
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
    forget, retain = forget.rows(forget_share.rows), retain.rows(retain_share.rows)
    forget_mask = None if forget_mask is None else forget_mask[forget_share.rows]
    retain_mask = None if retain_mask is None else retain_mask[retain_share.rows]
    frozen_forget = runner.frozen(forget)
    frozen_retain = runner.frozen(retain)
    frozen_forget_output = select_dims(frozen_forget.output, dims)
    retain_target = select_dims(_retain_target(config, frozen_retain.output, context.noise, retain_rows,
                                               retain_share.rows), retain_loss_dims)
    in_model_dtype = config.loss_dtype == "model"
    alpha = config.alpha[topic_index]

    def forget_error_of(updated_forget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        updated_forget = select_dims(updated_forget, dims)
        if coefficients[topic] is None and _coefficient_from_updated(config):
            coefficients[topic] = _updated_coefficient(config, ranks, topic_index, updated_forget, forget_mask,
                                                       forget_rows)
        scalar = coefficients[topic]
        if scalar is None:  # Adaptive RMU, per-sample rule
            coeff = rules.per_sample_coefficients(config.beta[topic_index], frozen_forget_output, forget_mask)
        else:
            coeff = torch.full((forget.input_ids.shape[0],), scalar, device=u.device)
        target = _forget_target(config, coeff, scalar, u)
        return masked_mse(updated_forget, target, forget_mask, in_model_dtype), coeff

    gradient_scale = ranks.world_size  # DDP / FSDP divide the summed gradients by the world size

    def forget_part():
        """(updated output, the error weighted for backward, the logged full-batch loss, coefficients)"""
        updated = runner.updated(frozen_forget)
        error, coeff = forget_error_of(updated)
        loss = ranks.sum(error.detach() * forget_share.weight)
        _check_finite(loss, "forget", step, topic)
        return updated, error * (forget_share.weight * gradient_scale), loss, coeff

    def retain_part():
        updated = runner.updated(frozen_retain)
        error = alpha * masked_mse(select_dims(updated, retain_loss_dims), retain_target, retain_mask, in_model_dtype)
        loss = ranks.sum(error.detach() * retain_share.weight)
        _check_finite(loss, "retain", step, topic)
        return updated, error * (retain_share.weight * gradient_scale), loss

    tensors.zero_grad()
    if config.single_backward:
        # One backward of forget + alpha * retain, as the published scripts (both graphs held at once).
        updated_forget, forget_weighted, forget_loss, coeff = forget_part()
        updated_retain, retain_weighted, retain_loss = retain_part()
        (forget_weighted + retain_weighted).backward()
    else:
        # Two backward passes (forget, then retain) sum the same gradient with half the live activations;
        # gradients are averaged across ranks once, in the second.
        with distributed.without_gradient_sync(runner.updated_module):
            updated_forget, forget_weighted, forget_loss, coeff = forget_part()
            forget_weighted.backward()
        updated_retain, retain_weighted, retain_loss = retain_part()
        retain_weighted.backward()
    tensors.gradients_to_master()
    context.optimizer.step()
    tensors.master_to_model()

    def batch_mean(per_row: torch.Tensor, share=forget_share, rows=forget_rows) -> float:
        return float(ranks.sum(per_row[: share.count].float().sum()) / rows)

    real = forget.attention_mask if forget_mask is None else forget_mask  # logged norms: over what the losses see
    record = {
        "step": step,
        "topic": topic,
        "forget_loss": forget_loss.item(),
        "retain_loss": retain_loss.item(),
        # a fixed coefficient exactly (a resumed run takes an Adaptive one taken during the run from here)
        "coeff": coefficients[topic] if coefficients[topic] is not None else batch_mean(coeff),
        "forget_norm": batch_mean(rules.mean_token_norm(select_dims(updated_forget.detach(), dims), real)),
        "frozen_forget_norm": batch_mean(rules.mean_token_norm(frozen_forget_output, real)),
    }
    if config.verbose_metrics:
        record |= _verbose_metrics(updated_forget.detach(), frozen_forget.output, updated_retain.detach(),
                                   frozen_retain.output, lambda v: batch_mean(v),
                                   lambda v: batch_mean(v, retain_share, retain_rows))
    return record


def _verbose_metrics(updated_forget, frozen_forget, updated_retain, frozen_retain, forget_mean, retain_mean) -> dict:
    """The published scripts' --verbose log: cosine(updated, frozen) per token, averaged, and the batch
    mean of the token-mean norm of the four activations; all positions, pads included, as theirs."""
    def cosine(a, b):
        return F.cosine_similarity(a.float(), b.float(), dim=-1).mean(dim=1)

    def norm(h):
        return h.float().norm(dim=-1).mean(dim=1)

    return {
        "verbose_forget_cosine": forget_mean(cosine(updated_forget, frozen_forget)),
        "verbose_retain_cosine": retain_mean(cosine(updated_retain, frozen_retain)),
        "verbose_updated_forget_norm": forget_mean(norm(updated_forget)),
        "verbose_frozen_forget_norm": forget_mean(norm(frozen_forget)),
        "verbose_updated_retain_norm": retain_mean(norm(updated_retain)),
        "verbose_frozen_retain_norm": retain_mean(norm(frozen_retain)),
    }


def _check_finite(loss: torch.Tensor, which: str, step: int, topic: str) -> None:
    if not math.isfinite(loss.item()):
        raise UnlearnError(
            f"the {which} loss is {loss.item()} at step {step} (topic '{topic}'); the run stopped and "
            "no checkpoint was written. Lower --lr or the coefficient, or use --dtype float32."
        )
