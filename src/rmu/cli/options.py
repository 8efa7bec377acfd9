"""The options of an unlearning run, written once: ``rmu unlearn`` takes them all; ``rmu sweep``
and ``rmu tune`` take the subset that makes sense for many runs on one loaded model.

Each option maps to an :class:`rmu.config.UnlearnConfig` field of the same name (``config_file``
aside); :func:`run_values` merges a ``--config`` YAML file, the corpora and the given flags into
the values of a configuration, checked before anything slow starts.
"""

from __future__ import annotations

import click

from rmu.config import ConfigError, load_yaml, make_config, parse_topic_sources
from rmu.experiments.values import parse_floats as _parse_floats
from rmu.experiments.values import parse_int_range as _parse_int_range

PER_TOPIC = "one value for all forget topics, or a comma-separated list, one per topic"


def _option(*declarations, **settings) -> tuple[tuple, dict]:
    return declarations, settings


# rmu unlearn's options, in the order of its --help.
UNLEARN_OPTIONS: dict[str, tuple[tuple, dict]] = {
    "config_file": _option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of options; flags override it."),
    "recipe": _option("--recipe", help="Every value of a published run: wmdp-rmu, adaptive-rmu or rna (list: rmu recipes); "
        "options given here or in --config override it."),
    "model": _option("--model", help="Local checkpoint folder or Hugging Face hub id."),
    "forget": _option("--forget", multiple=True, metavar="NAME=FILE", help="Forget corpus of a topic (repeat per topic)."),
    "retain": _option("--retain", multiple=True, metavar="FILE", help="Retain corpus: once for all topics, or once per topic."),
    "method": _option("--method", type=click.Choice(["rmu", "adaptive"])),
    "adaptive_rule": _option("--adaptive-rule", type=click.Choice(["first-batch", "per-sample"]),
        help="Adaptive RMU coefficient: authors' code (first-batch, default) or the paper's formula (per-sample)."),
    "layer": _option("--layer", type=int, help="Steered layer l (default 7)."),
    "update_layers": _option("--update-layers", help="Comma-separated layers whose weights train (default l-2,l-1,l)."),
    "params": _option("--params", help="Weights trained in those layers: presets mlp-out (default), mlp, attn, layer, or globs."),
    "steering_coeff": _option("--steering-coeff", help=f"RMU coefficient c: {PER_TOPIC}."),
    "beta": _option("--beta", help=f"Adaptive RMU scale: {PER_TOPIC}."),
    "alpha": _option("--alpha", help=f"Retain loss weight: {PER_TOPIC}."),
    "max_len": _option("--max-len", help=f"Forget truncation in tokens: {PER_TOPIC}."),
    "retain_max_len": _option("--retain-max-len", type=int, help="Retain truncation in tokens (default 512)."),
    "min_len": _option("--min-len", type=int, help="Drop documents of at most this many characters (default 0, as the published runs)."),
    "lr": _option("--lr", type=float),
    "batch_size": _option("--batch-size", type=int),
    "steps": _option("--steps", type=int, help="Steps; bounded by the batches available, as in WMDP's script."),
    "seed": _option("--seed", type=int),
    "noise": _option("--noise", type=float, help="Random noise augmentation nu of the retain target (default 0)."),
    "noise_seed": _option("--noise-seed", type=int),
    "mask_padding": _option("--mask-padding/--no-mask-padding", default=None,
        help="Exclude pads from losses and norms (default off, as the published scripts)."),
    "mask_first_token": _option("--mask-first-token/--no-mask-first-token", default=None,
        help="Exclude each row's first real token (the attention sink, often 100x the others' norm) "
        "from losses and norms (default off, as the published scripts)."),
    "dtype": _option("--dtype", type=click.Choice(["float32", "bfloat16", "float16", "auto"]),
        help="Model dtype (default float32; auto: the checkpoint's own). Losses and the optimizer's copies "
        "of trained weights stay float32 unless --loss-dtype model / --no-master-weights."),
    "optimizer": _option("--optimizer", type=click.Choice(["adamw", "adamw-legacy"]),
        help="adamw (torch, default) or adamw-legacy (transformers' removed AdamW the published scripts use)."),
    "master_weights": _option("--master-weights/--no-master-weights", default=None,
        help="In half precision, step float32 copies of the trained weights (default on; the scripts: off)."),
    "train_mode": _option("--train-mode/--no-train-mode", default=None,
        help="Run the updated layers in train() mode, dropout on (default off; the scripts: on)."),
    "corpus_reading": _option("--corpus-reading", type=click.Choice(["rmu", "original"]),
        help="original: WMDP get_data's reading ('text' only for *bio-forget-corpus*, other forget files as "
        "raw lines, retain rows as they are)."),
    "pad_eos": _option("--pad-eos/--no-pad-eos", default=None, help="Force pad = EOS (default: only when there is no pad token)."),
    "slow_tokenizer": _option("--slow-tokenizer/--no-slow-tokenizer", default=None, help="Load the slow tokenizer (use_fast=False)."),
    "vector_draw": _option("--vector-draw", type=click.Choice(["rmu", "original"]),
        help="original: torch.rand in the model's dtype on its device after manual_seed(seed), scaled in that "
        "dtype (default rmu: a float32 CPU generator)."),
    "adaptive_source": _option("--adaptive-source", type=click.Choice(["frozen", "updated"]),
        help="Adaptive first-batch coefficient from the frozen model before training (default) or the updated "
        "model at the topic's first step (the authors' code)."),
    "loss_dtype": _option("--loss-dtype", type=click.Choice(["float32", "model"]), help="Compute the MSEs in float32 (default) or the model's dtype."),
    "single_backward": _option("--single-backward/--no-single-backward", default=None,
        help="One backward of forget + retain (the scripts) instead of two (default, less memory)."),
    "verbose_metrics": _option("--verbose-metrics", is_flag=True, default=None,
        help="Record per step the cosines updated/frozen (forget, retain) and the four activation norms."),
    "device": _option("--device", help="cpu, cuda, cuda:1, ... or auto (default)."),
    "output": _option("--output", type=click.Path(file_okay=False), help="Folder for the checkpoint, run.json and control vectors."),
    "overwrite": _option("--overwrite", is_flag=True, default=None, help="Replace a run rmu wrote in --output (never another folder)."),
    "save_every": _option("--save-every", type=int, help="Save resumable state every N steps."),
    "resume": _option("--resume", is_flag=True, default=None, help="Continue the interrupted run in --output (refused if its inputs or options changed; "
        "with nothing saved, starts afresh)."),
    "control_vectors": _option("--control-vectors", type=click.Path(dir_okay=False), help="Reuse saved control vectors (safetensors)."),
    "trust_remote_code": _option("--trust-remote-code", is_flag=True, default=None),
    "full_load": _option("--full-load", is_flag=True, default=None, help="Load the whole model (default: layers 0..l only)."),
    "gradient_checkpointing": _option("--gradient-checkpointing", is_flag=True, default=None,
        help="Recompute the updated layers in backward: less activation memory, one more forward of them."),
    "nproc": _option("--nproc", type=int, default=1, show_default=True,
        help="Processes to run data-parallel on this machine (launches torch.distributed.run)."),
    "fsdp": _option("--fsdp", is_flag=True, default=None,
        help="Shard layers 0..l across processes with FSDP2 as they are read (each rank reads its rows only)."),
    "divergence_check": _option("--divergence-check/--no-divergence-check", default=None,
        help="Stop a run whose loss explodes (over 100x the first forget loss; default on)."),
    "auto": _option("--auto", help="Scale rule: calibrate these settings from the model's measured layer norms "
        "instead of taking them as given: lr, alpha, coeff (comma-separated) or all. "
        "See docs/tuning.md."),
    "auto_lr": _option("--auto-lr", type=click.Choice(["steps", "sign-step"]),
        help="With --auto lr: steps (default) checks the one-sign-step rule's lr against a few real optimizer "
        "steps and raises it by the measured shortfall; sign-step is the one-step rule alone. See docs/tuning.md."),
    "loss_dims": _option("--loss-dims", type=click.Choice(["all", "informative", "forget-informative"]),
        help="Dimensions of the layer output the losses use: all (default), informative (leave out the few "
        "massive, nearly constant dimensions; for models such as Gemma 3; see docs/tuning.md) or "
        "forget-informative (the forget loss without them, the retain loss on all)."),
    "keyword_robust": _option("--keyword-robust/--no-keyword-robust", default=None,
        help="Train on retain documents that mention forget-topic keywords in neutral sentences, so a forget "
        "word in an unrelated prompt no longer triggers the forgetting (default off; see rmu.keywords)."),
    "keywords": _option("--keywords", type=click.Path(dir_okay=False),
        help="--keyword-robust: forget keywords, one a line (default: found from the corpora)."),
    "keyword_fraction": _option("--keyword-fraction", type=float, help="--keyword-robust: share of retain documents augmented (default 0.5)."),
    "keyword_mask": _option("--keyword-mask/--no-keyword-mask", default=None,
        help="--keyword-robust: leave the inserted keyword sentence's own tokens out of the retain loss, so only "
        "the document's text around it is held (default on; needs a fast tokenizer; --no-keyword-mask holds "
        "every token, as before 2026-11-30)."),
    "keyword_positions": _option("--keyword-positions", metavar="LIST",
        help="--keyword-robust: where a sentence may go, comma-separated of before, after, inside (default all "
        "three; a sentence after the document trains nothing under --keyword-mask)."),
    "keyword_window": _option("--keyword-window", type=click.IntRange(min=1), metavar="TOKENS",
        help="--keyword-robust with --keyword-mask: hold only this many tokens after the inserted sentence "
        "(default: the whole rest of the document)."),
    "keyword_forget_focus": _option("--keyword-forget-focus/--no-keyword-forget-focus", default=None,
        help="--keyword-robust: the forget loss counts each forget sentence from its first keyword on only (the "
        "words before it, shared with the retain text, are left out; default off)."),
    "keyword_retain_weight": _option("--keyword-retain-weight", type=float, metavar="W",
        help="--keyword-robust with --keyword-mask: an augmented retain document's positions count W times a "
        "plain one's in the retain loss's mean (0 < W <= 1; default 1)."),
    "quiet": _option("--quiet", is_flag=True, help="No progress bar."),
}

# The options of every run of a sweep or a study (the rest each sets itself: method, layer, output, ...).
SWEEP_RUN_OPTIONS = ("config_file", "model", "forget", "retain", "steering_coeff", "beta", "adaptive_rule", "alpha",
                     "lr", "steps", "batch_size", "max_len", "retain_max_len", "min_len", "seed", "params",
                     "mask_padding", "mask_first_token", "loss_dims", "auto_lr", "dtype", "device")
# How they read there: the model is loaded once, whole, and evaluated (no hub id, no "auto" dtype).
MANY_RUNS = {
    "config_file": dict(help="YAML file of unlearning options (as for rmu unlearn); flags override it."),
    "model": dict(help="Local checkpoint folder (loaded once, whole)."),
    "dtype": dict(type=click.Choice(["float32", "bfloat16", "float16"]), help="Model dtype (default float32)."),
}


def run_options(*names: str, changes: dict[str, dict] | None = None):
    """Decorator adding the named run options (in the given order); ``changes``: option -> settings to replace."""
    changes = changes or {}
    options = []
    for name in names:
        declarations, settings = UNLEARN_OPTIONS[name]
        options.append(click.option(*declarations, **{**settings, **changes.get(name, {})}))

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def run_values(config_file, forget, retain, flags: dict) -> dict:
    """The values of a run's configuration: ``--config``'s YAML, then the corpora and the flags given.

    Refuses a missing model or corpus and bad values (nan, negative, wrong YAML types) at once,
    before any model loads.
    """
    values = load_yaml(config_file) if config_file else {}
    if forget:
        values["forget"] = parse_topic_sources(list(forget))
    if retain:
        values["retain"] = list(retain)
    values.update({k: v for k, v in flags.items() if v is not None})
    missing = [f"--{k}" for k in ("model", "forget", "retain") if k not in values]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (give them as flags or in --config)")
    make_config(values)
    return values


def collect_base(config_file, forget, retain, flags: dict) -> dict:
    """The values of every run: ``--config``'s YAML, the corpora, and the run options in ``flags``."""
    return run_values(config_file, forget, retain, {k: flags.get(k) for k in SWEEP_RUN_OPTIONS if k != "config_file"})


def parse_int_range(text: str) -> list[int]:
    """'3,6,9' -> [3, 6, 9]; '3-15' -> 3..15; '3-15:3' -> 3, 6, 9, 12, 15 (a bad text: click.BadParameter)."""
    try:
        return _parse_int_range(text)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def parse_floats(text: str) -> list[float]:
    try:
        return _parse_floats(text)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
