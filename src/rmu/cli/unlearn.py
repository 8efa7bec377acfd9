"""``rmu unlearn``: options (or a YAML file they override) -> UnlearnConfig -> rmu.unlearn."""

from __future__ import annotations

import os

import click

from rmu.config import ConfigError, load_yaml, make_config, parse_topic_sources

PER_TOPIC = "one value for all forget topics, or a comma-separated list, one per topic"


@click.command("unlearn")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of options; flags override it.")
@click.option("--recipe", help="Every value of a published run: wmdp-rmu, adaptive-rmu or rna (list: rmu recipes); "
                                "options given here or in --config override it.")
@click.option("--model", help="Local checkpoint folder or Hugging Face hub id.")
@click.option("--forget", multiple=True, metavar="NAME=FILE", help="Forget corpus of a topic (repeat per topic).")
@click.option("--retain", multiple=True, metavar="FILE", help="Retain corpus: once for all topics, or once per topic.")
@click.option("--method", type=click.Choice(["rmu", "adaptive"]))
@click.option("--adaptive-rule", type=click.Choice(["first-batch", "per-sample"]),
              help="Adaptive RMU coefficient: authors' code (first-batch, default) or the paper's formula (per-sample).")
@click.option("--layer", type=int, help="Steered layer l (default 7).")
@click.option("--update-layers", help="Comma-separated layers whose weights train (default l-2,l-1,l).")
@click.option("--params", help="Weights trained in those layers: presets mlp-out (default), mlp, attn, layer, or globs.")
@click.option("--steering-coeff", help=f"RMU coefficient c: {PER_TOPIC}.")
@click.option("--beta", help=f"Adaptive RMU scale: {PER_TOPIC}.")
@click.option("--alpha", help=f"Retain loss weight: {PER_TOPIC}.")
@click.option("--max-len", help=f"Forget truncation in tokens: {PER_TOPIC}.")
@click.option("--retain-max-len", type=int, help="Retain truncation in tokens (default 512).")
@click.option("--min-len", type=int, help="Drop documents of at most this many characters (default 0, as the published runs).")
@click.option("--lr", type=float)
@click.option("--batch-size", type=int)
@click.option("--steps", type=int, help="Steps; bounded by the batches available, as in WMDP's script.")
@click.option("--seed", type=int)
@click.option("--noise", type=float, help="Random noise augmentation nu of the retain target (default 0).")
@click.option("--noise-seed", type=int)
@click.option("--mask-padding/--no-mask-padding", default=None,
              help="Exclude pads from losses and norms (default off, as the published scripts).")
@click.option("--mask-first-token/--no-mask-first-token", default=None,
              help="Exclude each row's first real token (the attention sink, often 100x the others' norm) "
                   "from losses and norms (default off, as the published scripts).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16", "auto"]),
              help="Model dtype (default float32; auto: the checkpoint's own). Losses and the optimizer's copies "
                   "of trained weights stay float32 unless --loss-dtype model / --no-master-weights.")
@click.option("--optimizer", type=click.Choice(["adamw", "adamw-legacy"]),
              help="adamw (torch, default) or adamw-legacy (transformers' removed AdamW the published scripts use).")
@click.option("--master-weights/--no-master-weights", default=None,
              help="In half precision, step float32 copies of the trained weights (default on; the scripts: off).")
@click.option("--train-mode/--no-train-mode", default=None,
              help="Run the updated layers in train() mode, dropout on (default off; the scripts: on).")
@click.option("--corpus-reading", type=click.Choice(["rmu", "original"]),
              help="original: WMDP get_data's reading ('text' only for *bio-forget-corpus*, other forget files as "
                   "raw lines, retain rows as they are).")
@click.option("--pad-eos/--no-pad-eos", default=None, help="Force pad = EOS (default: only when there is no pad token).")
@click.option("--slow-tokenizer/--no-slow-tokenizer", default=None, help="Load the slow tokenizer (use_fast=False).")
@click.option("--vector-draw", type=click.Choice(["rmu", "original"]),
              help="original: torch.rand in the model's dtype on its device after manual_seed(seed), scaled in that "
                   "dtype (default rmu: a float32 CPU generator).")
@click.option("--adaptive-source", type=click.Choice(["frozen", "updated"]),
              help="Adaptive first-batch coefficient from the frozen model before training (default) or the updated "
                   "model at the topic's first step (the authors' code).")
@click.option("--loss-dtype", type=click.Choice(["float32", "model"]), help="Compute the MSEs in float32 (default) or the model's dtype.")
@click.option("--single-backward/--no-single-backward", default=None,
              help="One backward of forget + retain (the scripts) instead of two (default, less memory).")
@click.option("--verbose-metrics", is_flag=True, default=None,
              help="Record per step the cosines updated/frozen (forget, retain) and the four activation norms.")
@click.option("--device", help="cpu, cuda, cuda:1, ... or auto (default).")
@click.option("--output", type=click.Path(file_okay=False), help="Folder for the checkpoint, run.json and control vectors.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace a run rmu wrote in --output (never another folder).")
@click.option("--save-every", type=int, help="Save resumable state every N steps.")
@click.option("--resume", is_flag=True, default=None, help="Continue the interrupted run in --output (refused if its inputs or options changed; "
                   "with nothing saved, starts afresh).")
@click.option("--control-vectors", type=click.Path(dir_okay=False), help="Reuse saved control vectors (safetensors).")
@click.option("--trust-remote-code", is_flag=True, default=None)
@click.option("--full-load", is_flag=True, default=None, help="Load the whole model (default: layers 0..l only).")
@click.option("--gradient-checkpointing", is_flag=True, default=None,
              help="Recompute the updated layers in backward: less activation memory, one more forward of them.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Processes to run data-parallel on this machine (launches torch.distributed.run).")
@click.option("--fsdp", is_flag=True, default=None,
              help="Shard layers 0..l across processes with FSDP2 as they are read (each rank reads its rows only).")
@click.option("--divergence-check/--no-divergence-check", default=None,
              help="Stop a run whose loss explodes (over 100x the first forget loss; default on).")
@click.option("--auto", help="Scale rule: calibrate these settings from the model's measured layer norms "
                             "instead of taking them as given: lr, alpha, coeff (comma-separated) or all. "
                             "See docs/tuning.md.")
@click.option("--keyword-robust/--no-keyword-robust", default=None,
              help="Train on retain documents that mention forget-topic keywords in neutral sentences, so a forget "
                   "word in an unrelated prompt no longer triggers the forgetting (default off; see rmu.keywords).")
@click.option("--keywords", type=click.Path(dir_okay=False),
              help="--keyword-robust: forget keywords, one a line (default: found from the corpora).")
@click.option("--keyword-fraction", type=float, help="--keyword-robust: share of retain documents augmented (default 0.5).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(config_file, forget, retain, quiet, nproc, **flags):
    """Unlearn forget topics from a causal LM with RMU or Adaptive RMU."""
    from rmu.engine import unlearn

    # Errors of rmu (ConfigError, DataError, UnlearnError, ...) become one-line messages in rmu.cli.
    values = load_yaml(config_file) if config_file else {}
    if forget:
        values["forget"] = parse_topic_sources(list(forget))
    if retain:
        values["retain"] = list(retain)
    values.update({k: v for k, v in flags.items() if v is not None})
    missing = [f"--{k}" for k in ("model", "forget", "retain") if k not in values]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (give them as flags or in --config)")
    config = make_config(values)
    if nproc > 1:
        raise SystemExit(_launch(config, nproc, quiet))
    result = unlearn(config, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 speaks for the job
    last = result.records[-1] if result.records else {}
    click.echo(f"{len(result.records)} steps in {result.seconds:.1f} s; last forget loss "
               f"{last.get('forget_loss', float('nan')):.4g}, retain loss {last.get('retain_loss', float('nan')):.4g}")
    if result.output:
        click.echo(f"checkpoint, model card (README.md), run.json and control vectors written to {result.output}")


def _launch(config, nproc: int, quiet: bool) -> int:
    """Run this same, already validated, configuration in ``nproc`` processes (torch.distributed.run)."""
    import tempfile
    from pathlib import Path

    import yaml

    from rmu.distributed import launch

    with tempfile.TemporaryDirectory(prefix="rmu-launch-") as folder:
        config_file = Path(folder) / "config.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump()))
        return launch(nproc, ["unlearn", "--config", str(config_file), *(["--quiet"] if quiet else [])])
