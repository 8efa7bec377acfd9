"""Moved to the package :mod:`rmu.eval`; this module re-exports its names until release 0.2.

Prompts: :mod:`rmu.eval.prompts`; the decision rule: :mod:`rmu.eval.scoring`; results, the table
and the JSON file: :mod:`rmu.eval.results`; the native backend and perplexity:
:mod:`rmu.eval.native`; :func:`evaluate`: :mod:`rmu.eval.entry` (also ``rmu.eval.evaluate``).
"""

from rmu.eval.entry import BACKENDS, evaluate  # noqa: F401
from rmu.eval.native import *  # noqa: F401,F403
from rmu.eval.prompts import *  # noqa: F401,F403
from rmu.eval.results import *  # noqa: F401,F403
from rmu.eval.scoring import *  # noqa: F401,F403
from rmu.eval.tasks import as_task_list, unique_name  # noqa: F401
