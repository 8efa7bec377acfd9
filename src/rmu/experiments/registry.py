"""Every kind of result rmu writes, and the experiment that shows it (``rmu report``).

A result is a JSON file whose ``"kind"`` names its experiment (an unlearning run's is
``run.json``, recognised by its name). To add an experiment: subclass
:class:`rmu.experiments.Experiment` in its module and add an instance to :data:`EXPERIMENTS`.
"""

from __future__ import annotations

from pathlib import Path

from rmu.analysis.confidence import Confidence
from rmu.analysis.noise import Noise
from rmu.analysis.norms import Norms
from rmu.analysis.sweeps import CoeffSweep, LayerSweep
from rmu.analysis.token_norms import TokenNorms
from rmu.attacks import ATTACKS
from rmu.experiments.base import Experiment, ExperimentError, read_json
from rmu.experiments.unlearn_run import UnlearnRun
from rmu.tune import TuneStudy

EXPERIMENTS: tuple[Experiment, ...] = (
    UnlearnRun(),
    LayerSweep(),
    CoeffSweep(),
    Confidence(),
    Norms(),
    Noise(),
    TokenNorms(),
    *ATTACKS,
    TuneStudy(),
)

BY_KIND = {experiment.kind: experiment for experiment in EXPERIMENTS}
BY_FILE = {experiment.result_file(): experiment for experiment in EXPERIMENTS}


def experiment_of(path: Path, data) -> Experiment | None:
    """The experiment whose result ``data`` (read from ``path``) is: by its ``kind``, else by its file name."""
    if isinstance(data, dict) and data.get("kind") in BY_KIND:
        return BY_KIND[data["kind"]]
    return BY_FILE.get(path.name) if isinstance(data, dict) else None


def results_in(folder: Path) -> list[tuple[Experiment, dict]]:
    """The results of rmu in ``folder`` (not its sub-folders), each with its experiment, in file order."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = read_json(path)
        except ExperimentError:  # not JSON: not a result of rmu
            continue
        experiment = experiment_of(path, data)
        if experiment is not None:
            found.append((experiment, data))
    return found
