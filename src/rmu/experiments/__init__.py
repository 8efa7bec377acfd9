"""Experiments: every analysis, sweep and attack has one shape (:mod:`rmu.experiments.base`).

:mod:`rmu.experiments.values` holds the setting types given as one text (``--layers 3-15:3``);
:mod:`rmu.experiments.registry` lists every experiment (it imports every experiment module, so
import it only where all are needed: the report and the command line).
"""

from rmu.experiments.base import (ExperimentError, Experiment, NamedModels, Section, Settings, Table, open_models,
                                  read_json, split_models, write_json)
from rmu.experiments.values import FloatList, IntList, NameList, OptionalIntList

__all__ = ["ExperimentError", "Experiment", "FloatList", "IntList", "NameList", "NamedModels", "OptionalIntList",
           "Section", "Settings", "Table", "open_models", "read_json", "split_models", "write_json"]
