"""``rmu analyze confidence | norms | noise-sensitivity | token-norms``: options generated from each
analysis's settings (:mod:`rmu.cli.experiments`)."""

from __future__ import annotations

import click

from rmu.cli.experiments import experiment_command


@click.group("analyze")
def command() -> None:
    """Analyses of unlearned models: token confidence, norm convergence, noise sensitivity, token norms."""


def _analyses():
    from rmu.analysis.confidence import Confidence
    from rmu.analysis.noise import Noise
    from rmu.analysis.norms import Norms
    from rmu.analysis.token_norms import TokenNorms

    return {"confidence": Confidence(), "norms": Norms(), "noise-sensitivity": Noise(), "token-norms": TokenNorms()}


for _name, _experiment in _analyses().items():
    command.add_command(experiment_command(_experiment, _name))
