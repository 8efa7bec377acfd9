"""``rmu attack gcg | relearn | ablate | probe | keywords``: try to get the forgotten answers back.

Each sub-command is generated from its attack's settings (:mod:`rmu.attacks`,
:func:`rmu.cli.experiments.experiment_command`); errors are printed by the ``rmu`` group.
"""

from __future__ import annotations

import click

from rmu.attacks import ATTACKS
from rmu.cli.experiments import experiment_command


@click.group("attack")
def command() -> None:
    """Attacks on unlearned models: adversarial suffixes, relearning, ablation, probes, keywords."""


for _attack in ATTACKS:
    command.add_command(experiment_command(_attack, _attack.kind))
