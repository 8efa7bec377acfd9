"""The demo's unlearning settings, written once.

``rmu demo`` (:mod:`rmu.demo.run`), the robustness drivers beside it (:mod:`rmu.demo.robustness`,
:mod:`rmu.demo.keyword_robustness`) and the benchmarks that reproduce its numbers
(``benchmarks/models_baseline.py``, ``benchmarks/scale_rule_cell.py``) all read them from here, so a
change here changes every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rmu.config import UnlearnConfig, make_config


@dataclass(frozen=True)
class DemoSettings:
    """Hyper-parameters of the demo runs, chosen on SmolLM2 (the README's demo section says how).

    SmolLM2's layer-7 hidden states have norms near 140 (Zephyr-7B's, for which the published
    c = 6.5 was tuned, are near 3), so the learning rate is scaled up from 5e-5. RMU keeps the
    published c = 6.5 on purpose: below the layer's norm, its forget loss does not converge (the
    paper's claim 3); Adaptive RMU scales its coefficient to the norm. Pads are masked: with left
    padding the first position is a pad, and this model's first position carries a hidden state of
    norm ~800 that would dominate both losses.
    """

    layer: int = 7
    steps: int = 75  # all 300 forget documents once, in batches of 4
    batch_size: int = 4
    max_len: int = 128
    lr: float = 3e-3
    alpha: float = 300.0
    steering_coeff: float = 6.5  # RMU, the published value
    beta: float = 2.0  # Adaptive RMU, first-batch rule
    mask_padding: bool = True
    scoring: str = "completion"  # "The chemical symbol of iron is" -> " Fe"; see rmu.eval.prompts
    question_limit: int | None = None
    seed: int = 42

    def run_options(self) -> dict:
        """The options of :func:`rmu.config.make_config` every demo run shares: layer, batches,
        lengths, padding, seed, CPU. Not lr, alpha, c and beta, which a caller may calibrate instead
        (``--auto``)."""
        return dict(layer=self.layer, steps=self.steps, batch_size=self.batch_size, max_len=self.max_len,
                    retain_max_len=self.max_len, min_len=0, mask_padding=self.mask_padding, seed=self.seed,
                    device="cpu")

    def unlearn_config(self, model: str | Path, forget: dict[str, str], retain: list[str],
                       **options) -> UnlearnConfig:
        """The config of one demo run of ``model``: these settings, then ``options`` (method, noise,
        keyword options ...) on top."""
        values = dict(model=str(model), forget=forget, retain=retain, **self.run_options(), lr=self.lr,
                      alpha=self.alpha, steering_coeff=self.steering_coeff, beta=self.beta)
        return make_config(values | options)


DEFAULT = DemoSettings()
QUICK = DemoSettings(steps=40, question_limit=24)
