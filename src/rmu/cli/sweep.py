"""``rmu sweep layers`` and ``rmu sweep coeff``: many unlearning runs on one loaded model.

A sweep's own options are generated from its settings (:mod:`rmu.analysis.sweeps`); the options
of its runs are ``rmu unlearn``'s (:mod:`rmu.cli.options`).
"""

from __future__ import annotations

import click

from rmu.cli.experiments import settings_from_options, settings_options
from rmu.cli.options import MANY_RUNS, SWEEP_RUN_OPTIONS, collect_base, run_options
from rmu.cli.options import parse_floats, parse_int_range  # noqa: F401  (their old home, still importable)
from rmu.experiments.values import SCORINGS  # noqa: F401  (the command line's scorings, kept importable here)


def sweep_command(experiment, name: str) -> click.Command:
    """The command of a sweep: its settings' options, the run options, --output, --overwrite, --quiet."""

    @click.command(name, help=(experiment.__doc__ or "").strip())
    @settings_options(experiment.settings)
    @run_options(*SWEEP_RUN_OPTIONS, changes=MANY_RUNS)
    @click.option("--output", type=click.Path(file_okay=False), required=True,
                  help=f"Folder for sweep.json, {experiment.figure}, table.md and each point's run.json.")
    @click.option("--overwrite", is_flag=True, help="Start over instead of resuming a sweep in --output.")
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    @click.option("--no-plot", is_flag=True, help="No figure.")
    def command(config_file, forget, retain, output, overwrite, quiet, no_plot, **values):
        settings = settings_from_options(experiment.settings, values)  # the sweep's own options fail first
        base = collect_base(config_file, forget, retain, values)
        settings = experiment.settings.parse(**dict(settings, base=base))
        data = experiment.run(settings, output, plot=not no_plot, progress=not quiet, overwrite=overwrite)
        for line in experiment.summary(data):
            click.echo(line)
        click.echo(f"sweep.json, {experiment.figure} and table.md written to {output}")

    return command


@click.group("sweep")
def command() -> None:
    """Sweeps of unlearning runs (layers, coefficients), each run evaluated; resumable."""


def _sweeps():
    from rmu.analysis.sweeps import CoeffSweep, LayerSweep

    return {"layers": LayerSweep(), "coeff": CoeffSweep()}


for _name, _experiment in _sweeps().items():
    command.add_command(sweep_command(_experiment, _name))
