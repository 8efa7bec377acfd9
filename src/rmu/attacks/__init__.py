"""Attacks on unlearned models: do the forgotten answers come back?

One module per attack, each an experiment (:mod:`rmu.experiments`: a settings model, ``compute``,
figures, report tables; its ``rmu attack`` sub-command is generated from the settings) and a
Python function that returns (and optionally writes) its JSON-ready result:

* :func:`gcg_attack` -- Greedy Coordinate Gradient adversarial suffixes (Zou et al. 2023);
* :func:`relearn_attack` -- a few fine-tuning steps on forget (or unrelated) documents;
* :func:`ablate_attack` -- project the steering direction out of layer l at inference;
* :func:`probe_attack` -- linear probes on every layer's activations;
* :func:`keyword_attack` -- retain questions with a forget keyword inserted.
"""

from rmu.attacks.ablate import Ablate, AblateSettings, ablate_attack, estimate_direction, project_out, projection_hook
from rmu.attacks.common import AttackError
from rmu.attacks.gcg import Gcg, GcgSettings, gcg_attack, gcg_question
from rmu.attacks.keywords import KeywordSettings, Keywords, insert_keywords, keyword_attack
from rmu.attacks.probe import Probe, ProbeSettings, layer_activations, probe_accuracy, probe_attack
from rmu.attacks.relearn import Relearn, RelearnSettings, relearn_attack

ATTACKS = (Gcg(), Relearn(), Ablate(), Probe(), Keywords())  # in the order of ``rmu attack --help``

__all__ = [
    "ATTACKS", "Ablate", "AblateSettings", "AttackError", "Gcg", "GcgSettings", "KeywordSettings", "Keywords", "Probe",
    "ProbeSettings", "Relearn", "RelearnSettings", "ablate_attack", "estimate_direction", "gcg_attack", "gcg_question",
    "insert_keywords", "keyword_attack", "layer_activations", "probe_accuracy", "probe_attack", "project_out",
    "projection_hook", "relearn_attack",
]
