"""Moved to :mod:`rmu.eval.tasks`; this module re-exports its names until release 0.2."""

from rmu.eval.tasks import *  # noqa: F401,F403
