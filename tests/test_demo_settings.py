"""rmu.demo.settings: the demo's one settings object, and the configs every demo driver builds from it."""

from __future__ import annotations

import dataclasses

from rmu.config import make_config
from rmu.demo.settings import DEFAULT, QUICK, DemoSettings

FORGET, RETAIN = {"elements": "forget.jsonl"}, ["retain.jsonl"]


def test_unlearn_config_carries_every_setting():
    settings = DemoSettings(layer=3, steps=9, batch_size=2, max_len=64, lr=1e-3, alpha=50.0, steering_coeff=4.0,
                            beta=1.5, mask_padding=False, seed=7)
    config = settings.unlearn_config("model", FORGET, RETAIN)
    assert (config.layer, config.steps, config.batch_size, config.seed) == (3, 9, 2, 7)
    assert config.max_len == [64] and config.retain_max_len == 64 and config.min_len == 0
    assert (config.lr, config.alpha, config.steering_coeff, config.beta) == (1e-3, [50.0], [4.0], [1.5])
    assert config.mask_padding is False and config.device == "cpu"
    assert config.model == "model" and config.forget == FORGET and config.retain == RETAIN


def test_options_go_on_top_of_the_settings():
    config = DEFAULT.unlearn_config("model", FORGET, RETAIN, method="adaptive", noise=1.0, lr=1e-4)
    assert config.method == "adaptive" and config.noise == 1.0 and config.lr == 1e-4
    assert config.alpha == [DEFAULT.alpha] and config.layer == DEFAULT.layer


def test_run_options_leave_the_hyper_parameters_to_a_calibration():
    """scale_rule_cell's use: the demo's run, with lr, alpha and c from --auto."""
    options = DEFAULT.run_options()
    assert not {"lr", "alpha", "steering_coeff", "beta"} & set(options)
    config = make_config(dict(model="model", forget=FORGET, retain=RETAIN, **options, auto=["alpha", "coeff", "lr"]))
    assert config.auto == ["alpha", "coeff", "lr"] and config.layer == DEFAULT.layer


def test_quick_differs_from_default_only_in_length():
    changed = {f.name for f in dataclasses.fields(DemoSettings) if getattr(QUICK, f.name) != getattr(DEFAULT, f.name)}
    assert changed == {"steps", "question_limit"} and QUICK.steps < DEFAULT.steps
