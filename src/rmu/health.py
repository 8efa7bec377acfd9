"""Every run diagnoses itself: did the forget representations move, did the retain ones stay?

At the end of a run the engine calls :func:`diagnose` once. On the first ``HEALTH_BATCHES`` forget
and retain batches of each topic (the ones the run trained on, already tokenised) it runs the
engine's frozen pass (original weights) and updated pass (trained weights) of layers 0..l only,
under no_grad, and measures at layer l, per real token (the positions the losses use):

* ``forget_norm`` / ``coefficient``: how long the updated forget representations are against the
  target's length c (target: ratio 1); ``frozen_forget_norm`` is the layer's own norm;
* ``cosine_with_u`` (updated) and ``frozen_cosine_with_u``: the direction, target 1;
* ``progress``: 1 - |h_updated - c u| / |h_frozen - c u| (mean per token): the fraction of the way
  from the original representation to the target covered (1 = reached, 0 = did not move);
* ``retain_drift``: |h_updated - h_frozen| / |h_frozen| on retain batches (mean per token);
* ``forget_loss_ratio``: the topic's last forget loss over its first (from the step log).

Verdicts (thresholds below, also in the README's "Run health" section); each adds a warning,
logged on the ``rmu.health`` logger (stderr by default) and kept in run.json under ``health``:

* ``coefficient-too-large``: c > ``COEFF_HIGH`` x the layer's norm -> lower it to ~2x the norm;
* ``coefficient-too-small``: c < ``COEFF_LOW`` x the layer's norm (RMU only): the forget loss is
  then minimised by shrinking h, not by turning it to u -> raise c to ~2x the norm or use Adaptive;
* ``forget-did-not-move``: progress < ``PROGRESS_LOW`` -> raise --lr about 10x (or more steps);
* ``forget-partly-moved``: progress < ``PROGRESS_PARTIAL`` -> raise --lr about 3x or the steps;
  (neither when the coefficient is too large: the distance is then dominated by c). Unless the
  weights did move: when the retain drift exceeds ``HELD_RATIO`` x the progress (both fractions, of
  the retain norm and of the way to the target), the update went somewhere other than toward c*u
  and a larger lr makes that worse. On Gemma 3 270M (animals, ``--loss-dims informative``) 10x,
  16x and 30x the rule's lr gave progress 27%, 15%, 6% at drift 10%, 13%, 16%, while 10x with alpha
  581 -> 20 gave 52%. The advice is then to lower --alpha about 10x (the retain loss holds the
  forget states), or, when the retain drift is past ``DRIFT_HIGH`` as well, to lower --lr;
* ``retain-drift``: retain drift > ``DRIFT_HIGH`` of the norm -> raise --alpha or lower --lr;
* ``massive-activations``: a few dimensions (``rmu.scale.massive_activations``) hold more than
  ``MASSIVE_SHARE_HIGH`` (90%) of the frozen forget states' |h|^2. The coefficient, the distance and the
  progress then measure those dimensions, not the text's content, and the lr advice above is
  replaced by ``--loss-dims informative``: in Gemma 3 270M (98% in 6 dimensions at layer 7) a 10x lr
  moved the states less and cost retain accuracy (docs/tuning.md, section 4). With
  ``--loss-dims informative`` every measurement but the massive share is taken, as the losses were,
  on the other dimensions (u restricted to them), and this warning is not given.

With no warning the verdict is ``ok``. The thresholds are rules of thumb from the demo runs on
SmolLM2 (see docs/tuning.md), not guarantees: the accuracy on questions is the real test.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import torch

from rmu import rules, scale
from rmu.losses import informative_vector, retain_dims, select_dims, used_positions

logger = logging.getLogger("rmu.health")

HEALTH_BATCHES = 2  # forget and retain batches per topic measured after training
COEFF_HIGH = 30.0  # coefficient / layer norm above this: the target is far outside the layer's range
COEFF_LOW = 0.5  # coefficient / layer norm below this (RMU): the target is inside the cloud of h
PROGRESS_LOW = 0.1  # fraction of the way to the target below this: the representations did not move
PROGRESS_PARTIAL = 0.5  # below this: they moved, but stopped far short of the target
DRIFT_HIGH = 0.2  # retain drift above this fraction of the retain norm: the model is likely damaged
HELD_RATIO = 0.5  # retain drift / progress above this: the weights moved, the forget states did not follow
HELD_MIN_DRIFT = 0.01  # ... and only once the retain states moved at least this much (a tiny lr moves neither)
MASSIVE_SHARE_HIGH = 0.9  # massive share above this: the norms measure those dimensions (Gemma 3 layer 7: 98-99%; SmolLM2: 56-79%)


@dataclass
class TopicHealth:
    topic: str
    coefficient: float  # mean c over the measured forget rows (Adaptive RMU: beta x norm)
    frozen_forget_norm: float
    forget_norm: float
    frozen_cosine_with_u: float
    cosine_with_u: float
    progress: float
    retain_norm: float
    retain_drift: float
    forget_loss_first: float | None
    forget_loss_last: float | None
    massive_share: float = 0.0  # share of the frozen forget states' |h|^2 in their massive dimensions
    informative_norm: float = 0.0  # mean per-token norm of those states without the massive dimensions
    # --loss-dims: "informative" when the losses, and so every measurement above but the massive
    # share and informative_norm, left out the massive dimensions
    loss_dims: str = "all"
    # with "informative": the retain drift over every dimension, the massive ones included (which
    # neither loss holds), as |h_new - h_old| / |h_old| over all dimensions
    retain_drift_all_dims: float | None = None

    @property
    def forget_loss_ratio(self) -> float | None:
        if not self.forget_loss_first or self.forget_loss_last is None:
            return None
        return self.forget_loss_last / self.forget_loss_first


@dataclass
class HealthReport:
    verdict: str  # "ok" or the codes of the warnings, comma-separated
    warnings: list[dict] = field(default_factory=list)  # {"code", "topic", "message"}
    topics: list[TopicHealth] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        topics = []
        for topic in self.topics:
            values = asdict(topic)
            values["forget_loss_ratio"] = topic.forget_loss_ratio
            topics.append({k: _rounded(v) for k, v in values.items()})
        return {"verdict": self.verdict, "warnings": self.warnings, "topics": topics, "thresholds": self.thresholds}

    def lines(self) -> list[str]:
        """The short human report printed at the end of a run."""
        out = [f"run health: {self.verdict}"]
        for t in self.topics:
            ratio = t.forget_loss_ratio
            out.append(
                f"  [{t.topic}] forget loss x{ratio:.3g} of its start; " if ratio is not None else f"  [{t.topic}] "
            )
            out[-1] += (f"forget |h| {t.forget_norm:.4g} vs c {t.coefficient:.4g} (layer norm "
                        f"{t.frozen_forget_norm:.4g}), cos(h, u) {t.frozen_cosine_with_u:.2f} -> {t.cosine_with_u:.2f}, "
                        f"{t.progress:.0%} of the way to c*u; retain drift {t.retain_drift:.1%} of its norm; "
                        f"{t.massive_share:.1%} of |h|^2 in massive dimensions (norm without them "
                        f"{t.informative_norm:.4g})")
            if t.retain_drift_all_dims is not None:
                out[-1] += (f"; --loss-dims {t.loss_dims}: measured without the massive dimensions where the "
                            f"losses left them out (retain drift over all dimensions {t.retain_drift_all_dims:.1%})")
        out += [f"  warning: {w['message']}" for w in self.warnings]
        return out


def _rounded(value):
    return round(value, 6) if isinstance(value, float) and math.isfinite(value) else value


@torch.no_grad()
def measure_topic(runner, topic: str, pairs, u: torch.Tensor, coefficient: float | None, beta: float,
                  mask_of, device, records: list[dict], dims: torch.Tensor | None = None,
                  loss_dims: str = "all") -> TopicHealth:
    """Layer-l statistics of one topic on its first ``HEALTH_BATCHES`` (forget, retain) batch pairs.

    ``coefficient``: the topic's fixed c, or None for Adaptive RMU's per-sample rule (then beta x
    each row's norm). ``mask_of(batch)``: the positions the losses use (None for all). ``dims``: the
    dimensions the forget loss uses (``--loss-dims``; None for all), where ``u`` lives too; norms,
    cosines, progress and drift are measured there (the drift where the retain loss of ``loss_dims``
    acts: every dimension with ``forget-informative``), the massive share on every dimension.
    """
    sums = dict.fromkeys(("coeff", "frozen_norm", "norm", "frozen_cos", "cos", "progress", "retain_norm",
                          "drift", "massive_share", "informative_norm", "retain_norm_all", "drift_all"), 0.0)
    forget_tokens = retain_tokens = 0
    for forget, retain in pairs[:HEALTH_BATCHES]:
        forget, retain = forget.to(device), retain.to(device)
        real = used_positions(forget, mask_of(forget))
        frozen = runner.frozen(forget)
        updated = select_dims(runner.updated(frozen).float(), dims)
        original = select_dims(frozen.output.float(), dims)
        if coefficient is None:
            coeff = rules.per_sample_coefficients(beta, original, mask_of(forget))
        else:
            coeff = torch.full((original.shape[0],), float(coefficient), device=original.device)
        target = coeff[:, None, None] * u
        start_gap = (original - target).norm(dim=-1)
        progress = 1 - (updated - target).norm(dim=-1) / start_gap.clamp_min(1e-12)
        per_token = {
            "coeff": coeff[:, None].expand_as(start_gap),
            "frozen_norm": original.norm(dim=-1),
            "norm": updated.norm(dim=-1),
            "frozen_cos": torch.nn.functional.cosine_similarity(original, u[None, None], dim=-1),
            "cos": torch.nn.functional.cosine_similarity(updated, u[None, None], dim=-1),
            "progress": progress,
        }
        for key, values in per_token.items():
            sums[key] += float(values[real].sum())
        massive = scale.massive_activations(frozen.output, real)  # weighted by the batch's tokens below
        sums["massive_share"] += massive.share * int(real.sum())
        sums["informative_norm"] += massive.other_norm * int(real.sum())
        forget_tokens += int(real.sum())

        real = used_positions(retain, mask_of(retain))
        frozen = runner.frozen(retain)
        updated_all, original_all = runner.updated(frozen).float(), frozen.output.float()
        held = retain_dims(loss_dims, dims)
        updated, original = select_dims(updated_all, held), select_dims(original_all, held)
        sums["retain_norm"] += float(original.norm(dim=-1)[real].sum())
        sums["drift"] += float((updated - original).norm(dim=-1)[real].sum())
        sums["retain_norm_all"] += float(original_all.norm(dim=-1)[real].sum())
        sums["drift_all"] += float((updated_all - original_all).norm(dim=-1)[real].sum())
        retain_tokens += int(real.sum())
    forget_tokens, retain_tokens = max(forget_tokens, 1), max(retain_tokens, 1)
    losses = [r["forget_loss"] for r in records if r.get("topic") == topic]
    retain_norm = sums["retain_norm"] / retain_tokens
    return TopicHealth(
        topic=topic,
        coefficient=sums["coeff"] / forget_tokens,
        frozen_forget_norm=sums["frozen_norm"] / forget_tokens,
        forget_norm=sums["norm"] / forget_tokens,
        frozen_cosine_with_u=sums["frozen_cos"] / forget_tokens,
        cosine_with_u=sums["cos"] / forget_tokens,
        progress=sums["progress"] / forget_tokens,
        retain_norm=retain_norm,
        # mean drift over mean norm: per-token ratios would let near-zero-norm tokens dominate
        retain_drift=(sums["drift"] / retain_tokens) / max(retain_norm, 1e-12),
        forget_loss_first=losses[0] if losses else None,
        forget_loss_last=losses[-1] if losses else None,
        massive_share=sums["massive_share"] / forget_tokens,
        informative_norm=sums["informative_norm"] / forget_tokens,
        loss_dims="all" if dims is None else loss_dims,
        retain_drift_all_dims=None if dims is None else (
            (sums["drift_all"] / retain_tokens) / max(sums["retain_norm_all"] / retain_tokens, 1e-12)),
    )


def verdicts(topics: list[TopicHealth], method: str) -> list[dict]:
    """The warnings (code, topic, plain advice) that the measurements call for."""
    warnings = []

    def warn(code: str, topic: str, message: str) -> None:
        warnings.append({"code": code, "topic": topic, "message": f"[{topic}] {message}"})

    option = "--steering-coeff" if method == "rmu" else "--beta"
    for t in topics:
        ratio = t.coefficient / max(t.frozen_forget_norm, 1e-12)
        if ratio > COEFF_HIGH:
            warn("coefficient-too-large", t.topic,
                 f"the coefficient ({t.coefficient:.4g}) is {ratio:.0f}x the layer's norm ({t.frozen_forget_norm:.4g}): "
                 f"lower {option} to about 2x the norm, or use --auto coeff")
            # progress toward so far a target says nothing about lr; fix the coefficient first
            if t.retain_drift > DRIFT_HIGH:
                warn("retain-drift", t.topic, f"retain drift is {t.retain_drift:.0%} of the norm: raise --alpha or lower --lr")
            continue
        elif method == "rmu" and ratio < COEFF_LOW:
            warn("coefficient-too-small", t.topic,
                 f"the coefficient ({t.coefficient:.4g}) is {ratio:.2g}x the layer's norm ({t.frozen_forget_norm:.4g}): "
                 f"the forget loss shrinks h instead of turning it to u; raise --steering-coeff to about "
                 f"{2 * t.frozen_forget_norm:.3g} (2x the norm), use --auto coeff or --method adaptive")
        # With --loss-dims informative the losses and every measurement here leave them out already.
        massive = t.massive_share > MASSIVE_SHARE_HIGH and t.loss_dims == "all"
        if massive:
            warn("massive-activations", t.topic,
                 f"a few dimensions hold {t.massive_share:.1%} of the layer's |h|^2 (massive activations; norm "
                 f"{t.frozen_forget_norm:.4g}, {t.informative_norm:.4g} without them): the coefficient and the "
                 f"progress measure those dimensions, and raising --lr did not help on such a model; use "
                 f"--loss-dims informative to compute the losses without them (docs/tuning.md, section 4)")
        if t.progress < PROGRESS_LOW:
            warn("forget-did-not-move", t.topic,
                 f"the forget representations did not move ({t.progress:.0%} of the way to the target, "
                 f"cos(h, u) {t.cosine_with_u:.2f})" + _lr_advice(t, massive, "raise --lr about 10x, or use --auto lr"))
        elif t.progress < PROGRESS_PARTIAL:
            warn("forget-partly-moved", t.topic,
                 f"the forget representations moved only {t.progress:.0%} of the way to the target "
                 f"(cos(h, u) {t.cosine_with_u:.2f})" + _lr_advice(t, massive, "raise --lr about 3x or --steps"))
        if t.retain_drift > DRIFT_HIGH:
            warn("retain-drift", t.topic,
                 f"retain drift is {t.retain_drift:.0%} of the norm: raise --alpha or lower --lr")
    return warnings


def held_back(t: TopicHealth) -> bool:
    """The weights moved (the retain states drifted) but the forget states did not follow them to c*u:
    a larger lr then moves the model further without bringing the forget states closer."""
    return t.retain_drift > max(HELD_RATIO * t.progress, HELD_MIN_DRIFT)


def _lr_advice(t: TopicHealth, massive: bool, raise_lr: str) -> str:
    """What to do about forget states that fell short of the target: ``raise_lr`` unless that cannot help."""
    if massive:
        return " (see massive-activations)"
    if not held_back(t):
        return f": {raise_lr}"
    moved = (f": the weights moved (retain drift {t.retain_drift:.0%} of its norm) but the forget states did not "
             f"follow, so a larger --lr will not help")
    if t.retain_drift > DRIFT_HIGH:
        return f"{moved}; lower --lr about 3x"
    return f"{moved}; lower --alpha about 10x (the retain loss holds them), or lower --lr"


def diagnose(config, runner, batches, vectors: dict[str, torch.Tensor], coefficients: dict[str, float | None],
             records: list[dict], device, mask_of, dims: dict[str, torch.Tensor | None] | None = None) -> HealthReport:
    """The health report of a finished run (see the module docstring); logs its warnings.

    ``dims``: per topic the dimensions the forget loss used (``config.loss_dims``; None: all), and the
    retain loss too with ``informative``."""
    topics = []
    dims = dims or {}
    for index, topic in enumerate(config.topics):
        if not batches[index]:
            continue
        u = informative_vector(vectors[topic].float(), dims.get(topic)).to(device, torch.float32)
        topics.append(measure_topic(runner, topic, batches[index], u, coefficients[topic], config.beta[index],
                                    mask_of, device, records, dims.get(topic), config.loss_dims))
    warnings = verdicts(topics, config.method)
    for warning in warnings:
        logger.warning(warning["message"])
    thresholds = {"coeff_high": COEFF_HIGH, "coeff_low": COEFF_LOW, "progress_low": PROGRESS_LOW,
                  "progress_partial": PROGRESS_PARTIAL, "drift_high": DRIFT_HIGH, "batches": HEALTH_BATCHES,
                  "massive_share_high": MASSIVE_SHARE_HIGH, "massive_factor": scale.MASSIVE_FACTOR,
                  "held_ratio": HELD_RATIO, "held_min_drift": HELD_MIN_DRIFT}
    verdict = ",".join(dict.fromkeys(w["code"] for w in warnings)) or "ok"
    return HealthReport(verdict, warnings, topics, thresholds)
