"""The optimizer the published RMU scripts used: transformers' legacy ``AdamW``, written out.

transformers removed its own ``AdamW`` (``transformers.optimization.AdamW``) in v4.46; the WMDP and
Adaptive RMU scripts import it with its defaults (betas 0.9 / 0.999, eps 1e-6, weight decay 0,
``correct_bias=True``). It differs from ``torch.optim.AdamW`` in three ways that change results at
the authors' learning rate and gradient sizes:

* eps is added to the square root of the *uncorrected* second moment, and both bias corrections
  go into the step size, ``lr * sqrt(1 - beta2^t) / (1 - beta1^t)``. With gradients of ~1e-7 the
  first update is far smaller than torch's (eps dominates the denominator);
* the moments are kept in the parameter's dtype (bfloat16 moments when the model is bfloat16);
* the update is applied in the parameter's dtype, so in bfloat16 updates below half a unit in the
  last place of a weight round away.

``LegacyAdamW`` does exactly this; with float32 master copies (the engine's default in half
precision) the moments and updates are float32 instead.
"""

from __future__ import annotations

import math

import torch


class LegacyAdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay as transformers' removed ``AdamW`` computed it."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid LegacyAdamW settings: lr {lr}, betas {betas}, eps {eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    # zeros_like: the moments live in the parameter's own dtype, as in the original
                    state["exp_avg"] = torch.zeros_like(parameter)
                    state["exp_avg_sq"] = torch.zeros_like(parameter)
                state["step"] = int(state["step"]) + 1  # a resumed state holds a tensor
                self._update(parameter, parameter.grad, state, group, beta1, beta2)
        return loss

    @staticmethod
    def _update(parameter, grad, state, group, beta1: float, beta2: float) -> None:
        first, second, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        first.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        second.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denominator = second.sqrt().add_(group["eps"])  # not bias-corrected
        step_size = group["lr"]
        if group["correct_bias"]:
            step_size = step_size * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        parameter.addcdiv_(first, denominator, value=-step_size)
        if group["weight_decay"] > 0.0:
            parameter.add_(parameter, alpha=-group["lr"] * group["weight_decay"])


def make_optimizer(kind: str, parameters: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """``adamw``: torch.optim.AdamW; ``adamw-legacy``: :class:`LegacyAdamW`. Both: eps 1e-6, no weight decay."""
    if kind == "adamw-legacy":
        return LegacyAdamW(parameters, lr=lr)
    if kind == "adamw":
        # eps 1e-6 and no weight decay as the scripts' optimizer; torch's bias-corrected arithmetic.
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, eps=1e-6)
    raise ValueError(f"unknown optimizer {kind!r}: choose adamw or adamw-legacy")
