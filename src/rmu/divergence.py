"""The divergence rule: stop a run whose losses explode, before it is saved as complete.

NaN and infinite losses are caught in the step itself (``engine._check_finite``). A run can also
blow up while staying finite: at ``--lr 1e4`` the retain loss goes from 0 to ~1e10 in a few steps
and the weights are garbage. The yardstick is the topic's FIRST forget loss F0: the mean squared
distance, per hidden unit, between the frozen layer-l activations and the steering target
c * u. It is the natural scale of the run: the size of the activations plus the size of the target
(||h||^2/d + c^2/d for u nearly orthogonal to h).

Rule: at a step of topic t, the run has diverged when the forget loss, or the retain loss divided
by alpha (the retain MSE itself, less the noise floor nu^2 when ``--noise`` is on), exceeds
``BOUND`` x F0(t). That is, the updated activations have moved 10x the scale of everything the run
is asked to do (sqrt(100)) away from where they should be. Converging runs stay far below:
the forget loss falls from F0, and the retain MSE stays a small fraction of the activations' size
(see the README, "Reliability"). ``divergence_check: false`` / ``--no-divergence-check`` turns the
rule off.
"""

from __future__ import annotations

import math

BOUND = 100.0


def check(records: list[dict], config) -> str | None:
    """A message naming the step, the loss and what to lower when the last record diverged, else None."""
    if not config.divergence_check or not records:
        return None
    last = records[-1]
    topic = last["topic"]
    topic_index = config.topics.index(topic)
    first = next(r for r in records if r["topic"] == topic)["forget_loss"]
    if not (math.isfinite(first) and first > 0):
        return None
    alpha = config.alpha[topic_index]
    retain_mse = last["retain_loss"] / alpha - config.noise ** 2 if alpha > 0 else 0.0
    limit = BOUND * first
    if last["forget_loss"] > limit:
        what = f"the forget loss is {last['forget_loss']:.4g}"
        lower = f"--lr (now {config.lr:g}) or the coefficient (--steering-coeff / --beta)"
    elif retain_mse > limit:
        mse = "MSE less nu^2" if config.noise else "MSE"
        what = f"the retain loss is {last['retain_loss']:.4g} (alpha {alpha:g}; {mse} {retain_mse:.4g})"
        lower = f"--lr (now {config.lr:g}) or --alpha"
    else:
        return None
    return (
        f"the run diverged at step {last['step']} (topic '{topic}'): {what}, over {BOUND:g}x the topic's first "
        f"forget loss ({first:.4g}). The run stopped and no checkpoint was written. Lower {lower}; "
        "--no-divergence-check lets such a run go on."
    )
