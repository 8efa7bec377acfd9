"""Experiments: every analysis, sweep and attack has one shape (:mod:`rmu.experiments.base`).

:mod:`rmu.experiments.registry` lists them all (it imports every experiment module, so import it
only where all are needed: the report and the command line).
"""

from rmu.experiments.base import (ExperimentError, Experiment, IntList, NamedModels, Section, Settings, Table,
                                  open_models, read_json, split_models, write_json)

__all__ = ["ExperimentError", "Experiment", "IntList", "NamedModels", "Section", "Settings", "Table", "open_models",
           "read_json", "split_models", "write_json"]
