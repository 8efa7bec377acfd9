"""Settings written as one text on the command line: ``--layers 3-15:3``, ``--values 1,2,5``, ``--methods rmu,adaptive``.

Each is a pydantic type with a ``BeforeValidator`` that parses the text (a list given from Python
passes as it is). :func:`rmu.cli.experiments.option_for` gives such a field one text option, so
the option and the Python API accept the same thing and a bad text fails with the field's name.
"""

from __future__ import annotations

import dataclasses

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

_RANGE = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")
RANGE_HELP = "use a list (3,6,9), a range (3-15) or a range with a step (3-15:3)"


def parse_int_range(text: str) -> list[int]:
    """'3,6,9' -> [3, 6, 9]; '3-15' -> 3..15; '3-15:3' -> 3, 6, 9, 12, 15. A bad text raises ValueError."""
    values: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        match = _RANGE.fullmatch(part)
        if not match or (match[2] and int(match[2]) < int(match[1])) or (match[3] and int(match[3]) < 1):
            raise ValueError(f"{text!r}: {RANGE_HELP}")
        first = int(match[1])
        last = int(match[2]) if match[2] else first
        values += list(range(first, last + 1, int(match[3] or 1)))
    if not values:
        raise ValueError("give at least one value")
    return values


def parse_floats(text: str) -> list[float]:
    """'1,2,5.5' -> [1.0, 2.0, 5.5]. A bad text raises ValueError."""
    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{text!r}: give comma-separated numbers, e.g. 1,2,5,10") from None
    if not values:
        raise ValueError("give at least one value")
    return values


def parse_names(text: str) -> list[str]:
    """'rmu, adaptive' -> ['rmu', 'adaptive']."""
    return [name.strip() for name in str(text).split(",") if name.strip()]


@dataclasses.dataclass(frozen=True)
class TextValidator(BeforeValidator):
    """Parses a setting given as one text (``"3-15:3"``); its option takes one text (rmu.cli.experiments)."""


def _text_or_list(parse):
    def validate(value: Any) -> Any:
        return parse(value) if isinstance(value, str) else value

    return TextValidator(validate)


IntList = Annotated[list[int], _text_or_list(parse_int_range)]
OptionalIntList = Annotated[list[int] | None, _text_or_list(parse_int_range)]
FloatList = Annotated[list[float], _text_or_list(parse_floats)]
NameList = Annotated[list[str], _text_or_list(parse_names)]


SCORINGS = ("letter", "cloze", "completion")  # rmu.eval.SCORINGS, without importing torch at start-up
Scoring = Literal[SCORINGS]
