"""``rmu tune``'s search ranges (issue #11): what a trial may draw, and where the best trial sits in it.

The float parameters are factors of the scale rule's values (:mod:`rmu.scale`), drawn on a log scale
from ranges a user can move (``--lr-range``, ``--alpha-range``, ``--coeff-range``); steps come from
[``--steps``/4, ``--steps``]. A study cannot find a best beyond its ranges, so after a study
:func:`range_edges` says which of the best trial's values sit at an edge (within ``EDGE_FRACTION`` of
the range's width on the log scale) and which option would move the range past it. On Gemma 3 270M /
animals the trials that forgot most all drew alpha at the bottom of the default range, and a hand-run
alpha ten times lower forgot more than any trial (docs/tuning.md): nothing had told the user.
"""

from __future__ import annotations

import math

# Defaults: the ranges rmu tune drew from before they could be set (a study begun then continues).
LR_RANGE = (0.2, 10.0)  # lr = factor x the rule's lr
ALPHA_RANGE = (0.1, 10.0)  # alpha = factor x the rule's alpha
COEFF_RANGE = (1.0, 8.0)  # c = ratio x the layer's forget norm (RMU); beta = ratio (Adaptive RMU)
# A value sits at an edge when it is within this fraction of its range's log width from that edge
# (for the default alpha range, 0.1-10: below 0.158 or above 6.31).
EDGE_FRACTION = 0.1
SHIFT = 10.0  # the advice moves a range this factor (one decade) past the edge its best sits at

# trial parameter -> (TuneSettings field, option)
RANGES = {"lr_factor": ("lr_range", "--lr-range"), "alpha_factor": ("alpha_range", "--alpha-range"),
          "coeff_ratio": ("coeff_range", "--coeff-range")}


def range_problem(value, option: str) -> str | None:
    """What is wrong with a range (two positive numbers, LOW < HIGH), or None."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        return f"{option}: give two numbers LOW,HIGH, e.g. {option} 0.1,10"
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0:
        return f"{option} {low:g},{high:g}: both ends must be positive numbers (factors of the rule's value)"
    if low >= high:
        return f"{option} {low:g},{high:g}: LOW must be below HIGH"
    return None


def parse_range(text: str, option: str) -> tuple[float, float]:
    """``"0.01,1"`` -> (0.01, 1.0); a ValueError naming ``option`` otherwise."""
    parts = text.split(",")
    try:
        value = tuple(float(p) for p in parts) if len(parts) == 2 else None
    except ValueError:
        value = None
    problem = range_problem(value, option)
    if problem:
        raise ValueError(problem)
    return value  # type: ignore[return-value]


def clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def edge_of(value: float, low: float, high: float) -> str | None:
    """``"low"`` or ``"high"`` when ``value`` is within ``EDGE_FRACTION`` of that edge on the log scale."""
    width = math.log(high / low)
    position = math.log(value / low) / width  # 0 at the low edge, 1 at the high edge
    if position <= EDGE_FRACTION:
        return "low"
    if position >= 1 - EDGE_FRACTION:
        return "high"
    return None


def range_edges(params: dict, ranges: dict[str, tuple[float, float]], max_steps: int, steps_cap: int | None) -> list[dict]:
    """The best trial's values (``params``) that sit at an edge of their range, with the option that widens it.

    ``ranges``: TuneSettings field -> (low, high). Steps are drawn from [max(1, max_steps // 4), max_steps];
    ``steps_cap`` is one pass over the forget corpus (the engine runs no more steps): a best at the top
    when ``max_steps`` already reaches it is reported as a hard limit, and a bottom of 1 step is not reported.
    """
    edges = []
    for parameter, (field, option) in RANGES.items():
        if parameter not in params:
            continue
        low, high = ranges[field]
        edge = edge_of(params[parameter], low, high)
        if edge is None:
            continue
        shifted = (low / SHIFT, high / SHIFT) if edge == "low" else (low * SHIFT, high * SHIFT)
        direction = "lower" if edge == "low" else "higher"
        edges.append({"parameter": parameter, "edge": edge, "value": params[parameter], "range": [low, high],
                      "advice": f"{option} {shifted[0]:.3g},{shifted[1]:.3g} (one decade {direction})"})
    if "steps" in params:
        edges += _steps_edge(params["steps"], max_steps, steps_cap)
    return edges


def _steps_edge(steps: int, max_steps: int, cap: int | None) -> list[dict]:
    low = max(1, max_steps // 4)
    if low >= max_steps:
        return []
    edge = edge_of(steps, low, max_steps)
    if edge is None or (edge == "low" and low == 1):
        return []
    entry = {"parameter": "steps", "edge": edge, "value": steps, "range": [low, max_steps]}
    if edge == "low":
        shorter = max(1, max_steps // 2)
        return [dict(entry, advice=f"--steps {shorter} (trials draw steps from a quarter of --steps up to it)")]
    if cap is not None and max_steps >= cap:
        return [dict(entry, hard_limit=True,
                     advice=f"none: --steps {max_steps} already reaches one pass over the forget corpus ({cap} "
                            "steps, the engine's cap); a longer run needs more forget text or a smaller --batch-size")]
    longer = 2 * max_steps if cap is None else min(2 * max_steps, cap)
    return [dict(entry, advice=f"--steps {longer}" + (f" (at most {cap}: one pass over the forget corpus)"
                                                      if cap is not None else ""))]


def edge_lines(edges: list[dict]) -> list[str]:
    """One plain line per edge, for the command's summary and the report."""
    lines = []
    for e in edges:
        low, high = e["range"]
        where = f"the {'bottom' if e['edge'] == 'low' else 'top'} of its range {low:g}-{high:g}"
        line = f"the best trial's {e['parameter']} {e['value']:.3g} sits at {where}"
        if e.get("hard_limit"):
            lines.append(f"{line}; no wider range is possible: {e['advice'].removeprefix('none: ')}")
        else:
            lines.append(f"{line}: a better setting may lie beyond it; try {e['advice']}")
    return lines
