"""``rmu unlearn``: options (or a YAML file they override) -> UnlearnConfig -> rmu.unlearn."""

from __future__ import annotations

import os

import click

from rmu.cli.options import UNLEARN_OPTIONS, run_options, run_values
from rmu.config import make_config


@click.command("unlearn")
@run_options(*UNLEARN_OPTIONS)
def command(config_file, forget, retain, quiet, nproc, **flags):
    """Unlearn forget topics from a causal LM with RMU or Adaptive RMU."""
    from rmu.engine import unlearn

    # Errors of rmu (ConfigError, DataError, UnlearnError, ...) become one-line messages in rmu.cli.
    config = make_config(run_values(config_file, forget, retain, flags))
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
