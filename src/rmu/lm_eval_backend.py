"""Moved to :mod:`rmu.eval.lm_eval_backend`; this module re-exports its names until release 0.2.

Prefer ``rmu.eval.evaluate(..., backend="lm-eval")``, the one entry for both backends.
"""

from rmu.eval.lm_eval_backend import *  # noqa: F401,F403
