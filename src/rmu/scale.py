"""The scale rule: lr, alpha and the coefficient chosen from the model's measured layer-l scale.

Layer-l hidden states have norms near 3 in Zephyr-7B, 130 in SmolLM2-135M and 6,900 in Gemma 3
270M, so a recipe written in absolute numbers does nothing on one model and wrecks another. Which
settings must follow the scale, and how (docs/tuning.md has the long form):

* **coefficient** c: the forget target c*u only means "far from where h lives" relative to h's
  length. c = ``COEFF_RATIO`` x the mean per-token norm of the frozen layer-l forget states (on the
  first forget batch, over the positions the losses use): Adaptive RMU's first-batch rule with
  beta = ``COEFF_RATIO``. Zephyr's published c = 6.5 against its norm ~3 is the same ratio (~2.2).
* **alpha** is already scale-free: both losses are squared distances in the same units, and Adam
  normalises the summed gradient, so only the ratio of the two gradients matters. At the step where
  the retain gradient (alpha x drift) balances the forget gradient (the distance D to c*u), the
  retain states have drifted by D / alpha. alpha = D / (``RETAIN_BALANCE`` x R), R the retain norm:
  balance when the retain drift is ``RETAIN_BALANCE`` of R. With c = 2x the norm D/R is about 2.2,
  so alpha comes out near 550: between Zephyr's 1200 and the demo's hand-tuned 300 (which put the
  balance at 0.2% and 0.75% of the norm).
* **lr** must follow the scale: Adam's first step is lr x sign(gradient) whatever the gradient's
  size, so how far one step moves h depends only on lr and the model's weights and activations.
  The calibration measures that directly with a finite difference of one sign step (g the forget
  loss's gradient on the first forget batch): ``response`` = |h(W - eps sign g) - h(W)| / eps and
  ``approach`` = (|h(W) - c u| - |h(W - eps sign g) - c u|) / eps, per token: how far h moves, and
  how much closer to the target it gets, per unit of lr. Then lr = ``REACH`` x D / (T x approach),
  T the topic's steps: T steps at 1/``REACH`` of the first step's approach rate cover the distance
  D. ``REACH`` = 2 is a prior guess, not fitted: Adam's later steps are shorter than its first
  (gradient signs that flip shrink m / sqrt(v)) and the approach slows as h turns. (The demo's
  hand-found lr 3e-3 on SmolLM2 corresponds to ``REACH`` ~ 3.1; the rule gives 2.0e-3 there.)

Massive activations. In some models a few hidden dimensions carry huge, nearly constant values at
every token (Sun et al. 2024, "Massive activations in large language models"). Then the layer's
norm N, and with it c, D and the lr rule's first-step approach, measure those few dimensions, not
the token-dependent rest that carries what the model knows about the text. Gemma 3 270M at layer 7:
6 of 640 dimensions hold 98% of |h|^2 (one alone ~93%); the norm without them is ~735 against N ~5,500.
The calibration records them (:func:`massive_activations`: dimensions whose mean square over the
batch's tokens exceeds ``MASSIVE_FACTOR`` x the median dimension's; their share of |h|^2; the norm
without them) and the health report warns when they dominate (docs/tuning.md, section 4, has the
measurements and why the rule's settings then miss). With ``--loss-dims informative`` the losses
leave those dimensions out, and so does the rule: N, R, c = 2N, D and the first-step approach are
measured on the other dimensions, with u restricted to them (``rmu.losses.informative_vector``).

Real steps (``--auto-lr steps``, the default). The one-step rule assumes the run's Adam steps keep
1/``REACH`` of the first sign step's approach rate. On Gemma 3 270M's informative dimensions they do
not: at the rule's lr a 75-step run covered 8% of the way (animals), and 3-10x that lr was needed
(docs/tuning.md, "The lr over real steps"). :func:`lr_from_real_steps` checks the rule's promise
directly: from the original weights it runs ``PROBE_STEPS`` real steps per topic of the run itself
at the rule's lr (its optimizer, losses, alpha and coefficient, on the run's first batches) and
measures, as the health report does, the progress (the fraction of the way from h to c*u covered)
and the retain drift. The rule promises an even pace, ``PROBE_STEPS`` / T of the way after
``PROBE_STEPS`` steps; the lr is raised by the shortfall (pace / progress), clamped to [1,
``MAX_FACTOR``] and to the drift room ``DRIFT_LIMIT`` / the probe's retain drift (the retain states'
early drift is taken to grow in proportion to lr; on Gemma 3 270M, animals, 7.9x the lr gave 3.6x the
drift, so that guess is the cautious one; ``DRIFT_LIMIT`` is the health report's threshold for a
damaged model). Never lowered: Adam's steps are at most about lr per weight, as the first sign step
is, so a probe ahead of the pace says the rule holds, not that it is too fast. One probe, not a search: on Gemma 3 270M
(animals) a second probe at 7.9x the rule's lr covered no more in 8 steps (1.33% against 1.35%) although
over the 75-step run 10x covered 27% against 8%, so a short probe can measure the rule's shortfall at
its own lr but cannot rank larger ones; the cap keeps the raise where 75-step runs still gained (16x
and 30x covered less than 10x). After the probe the weights, the noise generator and torch's random
state are put back exactly and the run's optimizer is made afterwards, so the run is the one it would
be with the chosen lr given by hand (tests/test_scale_steps.py). Cost: ``PROBE_STEPS`` steps per topic
and one health-report measurement; the values go into run.json under ``calibration.real_steps``.

The calibration costs, per topic, one frozen pass of layers 0..l on a forget and a retain batch,
one forward+backward and one forward of the updated layers. Enabled per setting by
``UnlearnConfig.auto`` (``--auto lr,alpha,coeff`` or ``--auto all``); the measured values and the
chosen settings go into run.json under ``calibration``, and the run uses the chosen ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

COEFF_RATIO = 2.0  # c / the layer's norm (Adaptive RMU's beta); Zephyr's 6.5 / ~3 ~ 2.2
RETAIN_BALANCE = 0.004  # retain drift (fraction of its norm) at which alpha balances the forget pull
REACH = 2.0  # first-step approach rates per run, in units of the distance to the target (a prior guess)
EPS_RELATIVE = 1e-3  # finite-difference step, relative to the trained weights' RMS (float32)
EPS_RELATIVE_HALF = 3e-2  # in bfloat16/float16 a smaller step would round away
AUTO_SETTINGS = ("lr", "alpha", "coeff")
MASSIVE_FACTOR = 100.0  # a dimension is "massive" when its mean square exceeds this x the median dimension's
# --auto-lr steps: the probe over real optimizer steps (lr_from_real_steps)
PROBE_STEPS = 8  # real steps per topic in the probe (fewer when the run itself is shorter)
MAX_FACTOR = 10.0  # the most the probe raises the one-step rule's lr (Gemma animals: 16x, 30x moved less than 10x)
DRIFT_LIMIT = 0.2  # nor so far that the probe's retain drift, scaled by the raise, passes this (health's DRIFT_HIGH)


class CalibrationError(RuntimeError):
    """The calibration cannot run (e.g. no batches); the message says what to do."""


@dataclass
class TopicScale:
    topic: str
    # The norms, c, D and the approach are over the dimensions the losses use (--loss-dims).
    forget_norm: float  # mean per-token norm of the frozen layer-l forget states
    retain_norm: float  # the same on retain states
    coefficient: float  # c the run uses (RMU), or beta x forget_norm (Adaptive RMU)
    distance: float  # mean per-token |h_frozen - c u| on the forget batch
    response: float  # kappa: mean per-token |dh| per unit lr of a sign step
    approach: float  # mean per-token decrease of |h - c u| per unit lr of the same step
    lr: float  # the rule's lr for this topic
    alpha: float  # the rule's alpha for this topic
    massive_dims: list[int]  # the forget states' massive dimensions (see massive_activations)
    massive_share: float  # their share of the mean |h|^2
    informative_norm: float  # mean per-token norm of h without them


@dataclass
class MassiveActivations:
    dims: list[int]  # indices of the massive dimensions
    share: float  # their fraction of sum |h|^2 over the tokens
    other_norm: float  # mean per-token norm of h over the remaining dimensions


def massive_activations(hidden: torch.Tensor, real: torch.Tensor) -> MassiveActivations:
    """The dimensions of ``hidden`` (batch, tokens, d) whose mean square over the ``real`` tokens is
    more than ``MASSIVE_FACTOR`` x the median dimension's, their share of |h|^2, and the rest's norm."""
    tokens = hidden.detach().float()[real]
    if tokens.shape[0] == 0:
        return MassiveActivations([], 0.0, 0.0)
    mean_square = tokens.pow(2).mean(dim=0)
    massive = mean_square > MASSIVE_FACTOR * mean_square.median()
    share = float(mean_square[massive].sum() / mean_square.sum().clamp_min(1e-30))
    return MassiveActivations(massive.nonzero().flatten().tolist(), share,
                              float(tokens[:, ~massive].norm(dim=-1).mean()))


def massive_dims(config, runner, batches, device) -> dict[str, list[int]]:
    """Per topic, the massive dimensions of the frozen layer-l states of its first forget batch, over
    the positions the losses use: what ``--loss-dims informative`` leaves out when no calibration
    (``--auto``) has measured them already (the calibration measures the same batch the same way)."""
    from rmu.losses import loss_mask, used_positions

    found = {}
    for index, topic in enumerate(config.topics):
        if not batches[index]:
            found[topic] = []
            continue
        forget = batches[index][0][0].to(device)
        real = used_positions(forget, loss_mask(forget, config))
        found[topic] = massive_activations(runner.frozen(forget).output, real).dims
    return found


def probe_step(parameters: list[torch.Tensor], relative: float) -> float:
    """The finite-difference step: ``relative`` x the RMS of the *smallest* trained tensor.

    One step size for all tensors (Adam's first step is lr x sign for every weight alike); taken
    from the smallest so that no tensor is moved by more than ``relative`` of its own scale, which
    keeps the difference linear when small and large tensors are trained together (``--params
    layer``: norm weights of RMS ~30 next to projections of RMS ~0.02 in Gemma 3).
    """
    return relative * min(float(p.detach().float().pow(2).mean().sqrt()) for p in parameters)


def significant(value: float, digits: int = 3) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def steering_coefficient(ratio: float, forget_norm: float) -> float:
    """RMU's c for a coefficient ratio: ``ratio`` x the layer's measured forget norm (4 significant digits)."""
    return significant(ratio * forget_norm, 4)


def _response(runner, trained: dict[str, torch.nn.Parameter], frozen, target: torch.Tensor,
              mask: torch.Tensor | None, real: torch.Tensor, dims: torch.Tensor | None = None) -> tuple[float, float]:
    """Per unit lr of a sign step (Adam's first step): how far h_l moves, and how much closer to c*u.

    Both are means over tokens of a finite difference of step eps, divided by eps; measured, as the
    losses, on the dimensions ``dims`` (None: all).
    """
    from rmu.losses import masked_mse, select_dims

    parameters = list(trained.values())
    with torch.enable_grad():
        before = select_dims(runner.stack(frozen.hidden_in, frozen.calls), dims)
        gradients = torch.autograd.grad(masked_mse(before, target, mask), parameters)
    half = any(p.dtype != torch.float32 for p in parameters)
    eps = probe_step(parameters, EPS_RELATIVE_HALF if half else EPS_RELATIVE)
    saved = [p.detach().clone() for p in parameters]
    with torch.no_grad():
        try:
            for parameter, gradient in zip(parameters, gradients):
                parameter.sub_(eps * gradient.sign().to(parameter.dtype))
            after = select_dims(runner.stack(frozen.hidden_in, frozen.calls), dims)
        finally:
            for parameter, value in zip(parameters, saved):
                parameter.copy_(value)
    before, after = before.detach().float(), after.float()
    moved = (after - before).norm(dim=-1)[real]
    closer = ((before - target).norm(dim=-1) - (after - target).norm(dim=-1))[real]
    return float(moved.mean()) / eps, float(closer.mean()) / eps


def calibrate(config, runner, trained: dict[str, torch.nn.Parameter], batches, vectors: dict[str, torch.Tensor],
              steps: int, device) -> tuple[object, dict]:
    """The config with the ``config.auto`` settings replaced by the rule's, and the measurements.

    ``batches``: the engine's topic -> [(forget batch, retain batch), ...]; the first pair of each
    topic is measured. ``trained``: the model's trained tensors (restored after the probe step).
    """
    from rmu import rules
    from rmu.losses import informative_dims, informative_vector, loss_mask, select_dims, used_positions

    auto = set(config.auto)
    topics = []
    coefficients = list(config.steering_coeff)
    betas = list(config.beta)
    if "coeff" in auto and config.method == "adaptive":
        betas = [COEFF_RATIO] * len(config.topics)
    for index, topic in enumerate(config.topics):
        if not batches[index]:
            raise CalibrationError(f"topic '{topic}' has no batch to calibrate on; give a longer corpus")
        forget, retain = (b.to(device) for b in batches[index][0])
        forget_mask, retain_mask = loss_mask(forget, config), loss_mask(retain, config)
        forget_real, retain_real = used_positions(forget, forget_mask), used_positions(retain, retain_mask)
        frozen = runner.frozen(forget)
        massive = massive_activations(frozen.output, forget_real)
        # --loss-dims informative: N, R, c, D and the approach measured where the forget loss acts (R
        # there too with forget-informative: alpha balances the two pulls per dimension where both act)
        dims = (informative_dims(frozen.output.shape[-1], massive.dims, device)
                if config.loss_dims != "all" else None)
        original = select_dims(frozen.output.float(), dims)
        forget_norm = float(original.norm(dim=-1)[forget_real].mean())
        retain_hidden = select_dims(runner.frozen(retain).output.float(), dims)
        retain_norm = float(retain_hidden.norm(dim=-1)[retain_real].mean())
        if config.method == "adaptive":
            coefficient = rules.first_batch_coefficient(betas[index], original, forget_mask)
        elif "coeff" in auto:
            coefficient = steering_coefficient(COEFF_RATIO, forget_norm)
            coefficients[index] = coefficient
        else:
            coefficient = float(coefficients[index])
        u = informative_vector(vectors[topic].float(), dims).to(device, torch.float32)
        target = coefficient * u
        distance = float((original - target).norm(dim=-1)[forget_real].mean())
        response, approach = _response(runner, trained, frozen, target, forget_mask, forget_real, dims)
        topic_steps = max(1, math.ceil(steps / len(config.topics)))
        topics.append(TopicScale(
            topic=topic, forget_norm=forget_norm, retain_norm=retain_norm, coefficient=coefficient,
            distance=distance, response=response, approach=approach,
            lr=significant(REACH * distance / (topic_steps * max(approach, 1e-30))),
            alpha=significant(distance / (RETAIN_BALANCE * max(retain_norm, 1e-30))),
            massive_dims=massive.dims, massive_share=massive.share, informative_norm=massive.other_norm,
        ))
    updates: dict = {}
    if "lr" in auto:
        updates["lr"] = min(t.lr for t in topics)  # one optimizer: the most cautious topic's
    if "alpha" in auto:
        updates["alpha"] = [t.alpha for t in topics]
    if "coeff" in auto:
        updates["steering_coeff" if config.method == "rmu" else "beta"] = (
            coefficients if config.method == "rmu" else betas)
    calibration = {
        "auto": sorted(auto),
        "rule": {"coeff_ratio": COEFF_RATIO, "retain_balance": RETAIN_BALANCE, "reach": REACH,
                 "massive_factor": MASSIVE_FACTOR},
        "loss_dims": config.loss_dims,  # informative: the norms above leave out massive_dims
        "topics": [{k: significant(v, 5) if isinstance(v, float) else v for k, v in asdict(t).items()}
                   for t in topics],
        "chosen": updates,
    }
    return config.model_copy(update=updates), calibration


def lr_from_real_steps(sign_lr: float, run_steps: int, topics: int, probe) -> tuple[float, dict]:
    """The one-step rule's lr checked against real optimizer steps, and what the probe measured.

    ``probe(lr, steps)`` runs ``steps`` real steps per topic of the run at ``lr`` from the original
    weights, puts everything back, and returns per topic ``{"progress", "retain_drift"}`` (as the
    health report measures them), or None when a loss was not finite. See the module docstring.
    """
    topic_steps = max(1, math.ceil(run_steps / topics))
    steps = min(PROBE_STEPS, topic_steps)
    pace = steps / topic_steps  # the rule's promise: an even pace that reaches c*u at the run's end
    measured = probe(sign_lr, steps)
    record = {"sign_step_lr": sign_lr, "probe_steps": steps, "pace": significant(pace, 4),
              "rule": {"probe_steps": PROBE_STEPS, "max_factor": MAX_FACTOR, "drift_limit": DRIFT_LIMIT}}
    if measured is None:  # the rule's own lr diverged: nothing to raise (the run will say so)
        return sign_lr, record | {"diverged": True, "shortfall": None, "factor": 1.0, "lr": sign_lr}
    # the fastest topic: one optimizer, so no topic is pushed past the pace
    progress = max(m["progress"] for m in measured)
    drift = max(m["retain_drift"] for m in measured)
    shortfall = pace / max(progress, 1e-6)
    # the probe's drift taken to grow in proportion to lr (cautious: Gemma animals 7.9x the lr, 3.6x the drift)
    drift_room = DRIFT_LIMIT / max(drift, 1e-12)
    factor = significant(max(min(shortfall, MAX_FACTOR, drift_room), 1.0), 3)
    lr = significant(sign_lr * factor)
    return lr, record | {"progress": [significant(m["progress"], 4) for m in measured],
                         "retain_drift": [significant(m["retain_drift"], 4) for m in measured],
                         "shortfall": significant(shortfall, 4), "drift_room": significant(drift_room, 4),
                         "factor": factor, "lr": lr}
