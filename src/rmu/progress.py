"""Progress bars that suit where they are shown: a live bar on a terminal, lines in logs and CI.

Every progress bar of rmu comes from :func:`bar`, which takes tqdm's own arguments. On a terminal
(or in a notebook) it is tqdm as usual. When the stream is not a terminal (a log file, CI, a pipe),
a redrawn bar would fill the log with thousands of carriage returns; there it prints one plain line
every ``LOG_PERCENT`` percent of the total instead (every ``LOG_SECONDS`` when the total is unknown).
"""

from __future__ import annotations

import math
import sys

from tqdm import autonotebook
from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as std_tqdm

LOG_PERCENT = 5  # without a terminal: one line per this share of the total
LOG_SECONDS = 30.0  # without a terminal and without a total: at most one line per this many seconds
write = auto_tqdm.write  # print a message without breaking a bar on screen


def bar(iterable=None, **options):
    """A tqdm bar (same arguments), drawn in place on a terminal and as lines elsewhere."""
    stream = options.get("file") or sys.stderr
    if _is_terminal(stream) or autonotebook.tqdm is not std_tqdm:  # a notebook draws its own widget
        return auto_tqdm(iterable, **options)
    total = options.get("total")
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if total:
        steps = {"miniters": max(1, math.ceil(total * LOG_PERCENT / 100)), "mininterval": 0.0}
    else:
        steps = {"mininterval": LOG_SECONDS}
    options.update(steps, file=_Lines(stream), dynamic_ncols=False, ascii=True,
                   maxinterval=math.inf)  # tqdm's monitor would otherwise drop miniters to 1 after 10 s
    return _LogBar(iterable, **options)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _LogBar(std_tqdm):
    """tqdm that shows each count once: the closing redraw of the last count adds no line."""

    def display(self, msg=None, pos=None):
        if msg is None:
            if getattr(self, "_shown", None) == self.n:
                return True
            self._shown = self.n
        return super().display(msg, pos)


class _Lines:
    """The stream seen by a bar without a terminal: each redraw becomes one line, blanks vanish.

    tqdm redraws with ``"\\r" + text + padding`` and ends with a bare newline or carriage return.
    """

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        getattr(self.stream, "flush", lambda: None)()
