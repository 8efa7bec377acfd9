"""The base class of every error rmu expects: bad input or a run that cannot go on.

Each module keeps its own subclass (ConfigError, DataError, UnlearnError, CheckpointError, ...);
they all derive from :class:`RmuError`, whose message names the input and the fix. The command
line prints such an error as one or two lines and exits non-zero; anything else is a bug and
keeps its traceback. ``rmu --debug`` (or ``RMU_DEBUG=1``) shows the traceback of both.
"""

from __future__ import annotations

import os


class RmuError(Exception):
    """An expected failure; the message names the input and the fix."""


def debug_requested() -> bool:
    """True when the environment asks for tracebacks (``RMU_DEBUG`` set to anything but 0/empty)."""
    return os.environ.get("RMU_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
