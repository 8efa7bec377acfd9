"""The run health report (rmu.health) and the scale rule's calibration (rmu.scale) on tiny models."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from conftest import tiny_elements_options, write_workspace
from rmu import scale
from rmu.cli.unlearn import command as unlearn_command
from rmu.config import make_config
from rmu.engine import unlearn
from rmu.testing import save_tiny_model, tiny_model


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_workspace(tmp_path_factory.mktemp("health"), "elements", layers=None, lines=16)


options = tiny_elements_options


def run(tiny, corpora, **extra):
    model, tokenizer = tiny
    result = unlearn(make_config(options(corpora, **extra)), model=model, tokenizer=tokenizer, progress=False)
    result.restore_original()
    return result


def codes(result) -> set[str]:
    return {w["code"] for w in result.health["warnings"]}


# The tiny model's layer-2 norm is about 0.26; the settings below put each measurement past its threshold.

def test_forget_did_not_move_fires_with_a_tiny_lr(tiny, corpora, caplog):
    with caplog.at_level(logging.WARNING, logger="rmu.health"):
        result = run(tiny, corpora, lr=1e-7, steering_coeff=0.5)
    topic = result.health["topics"][0]
    assert topic["progress"] < 0.01 and topic["retain_drift"] < 0.01
    assert codes(result) == {"forget-did-not-move"}
    assert "raise --lr about 10x" in caplog.text  # the warning reached the logger (stderr by default)


def test_coefficient_too_large_fires(tiny, corpora):
    result = run(tiny, corpora, steering_coeff=1e4)
    assert "coefficient-too-large" in codes(result)
    assert not codes(result) & {"forget-did-not-move", "forget-partly-moved"}  # no contradictory lr advice
    message = next(w["message"] for w in result.health["warnings"] if w["code"] == "coefficient-too-large")
    assert "x the layer's norm" in message


def test_coefficient_too_small_fires_for_rmu_only(tiny, corpora):
    assert "coefficient-too-small" in codes(run(tiny, corpora, steering_coeff=0.05))
    # Adaptive RMU's coefficient is beta x the norm: never "too small" by construction of the rule
    assert "coefficient-too-small" not in codes(run(tiny, corpora, method="adaptive", beta=0.1))


def test_retain_drift_fires_without_a_retain_loss(tiny, corpora):
    result = run(tiny, corpora, alpha=0.0, lr=5e-2, steering_coeff=0.5)
    assert "retain-drift" in codes(result)
    assert result.health["topics"][0]["retain_drift"] > 1
    assert "raise --alpha or lower --lr" in " ".join(w["message"] for w in result.health["warnings"])


def test_partial_progress_fires_and_the_report_is_consistent(tiny, corpora):
    result = run(tiny, corpora, lr=2e-3, alpha=0.0, steering_coeff=0.5)
    topic = result.health["topics"][0]
    assert 0.1 <= topic["progress"] < 0.5 and "forget-partly-moved" in codes(result)
    assert result.health["verdict"] == ",".join(dict.fromkeys(w["code"] for w in result.health["warnings"]))
    assert topic["forget_loss_ratio"] == pytest.approx(result.records[-1]["forget_loss"] / result.records[0]["forget_loss"],
                                                       rel=1e-4)
    assert topic["coefficient"] == 0.5 and topic["frozen_forget_norm"] > 0


def test_past_the_lr_peak_the_advice_is_not_a_larger_lr(tiny, corpora):
    # lr 10x the one above at alpha 1000: the retain states drift 78% while the forget states end
    # *farther* from the target; "raise --lr" would contradict the retain-drift advice.
    result = run(tiny, corpora, lr=5e-2, alpha=1e3, steering_coeff=0.5)
    topic = result.health["topics"][0]
    assert topic["progress"] < 0.1 and topic["retain_drift"] > 0.2
    assert codes(result) == {"forget-did-not-move", "retain-drift"}
    messages = " ".join(w["message"] for w in result.health["warnings"])
    assert "raise --lr" not in messages and "a larger --lr will not help; lower --lr" in messages


def test_held_back_forget_states_get_lower_alpha_advice_that_works(tiny, corpora):
    held = run(tiny, corpora, lr=5e-3, alpha=1e3, steering_coeff=0.5)
    topic = held.health["topics"][0]
    assert topic["progress"] < 0.1 and 0.01 < topic["retain_drift"] <= 0.2  # moved, not past DRIFT_HIGH
    assert codes(held) == {"forget-did-not-move"}
    message = held.health["warnings"][0]["message"]
    assert "raise --lr" not in message and "lower --alpha about 10x" in message
    # following the advice moves the forget states further; the advice it replaced does not
    lower_alpha = run(tiny, corpora, lr=5e-3, alpha=1e2, steering_coeff=0.5).health["topics"][0]
    larger_lr = run(tiny, corpora, lr=5e-2, alpha=1e3, steering_coeff=0.5).health["topics"][0]
    assert lower_alpha["progress"] > topic["progress"] > larger_lr["progress"]
    assert held.health["thresholds"]["held_ratio"] == 0.5


def test_unlearn_cli_prints_health_and_writes_it_to_run_json(tmp_path, corpora):
    model = save_tiny_model(tmp_path / "model", "llama", num_layers=4)
    out = tmp_path / "run"
    args = ["--model", str(model), "--forget", f"f={corpora / 'forget.jsonl'}", "--retain", str(corpora / "retain.txt"),
            "--layer", "2", "--steps", "3", "--batch-size", "2", "--min-len", "0", "--max-len", "32",
            "--lr", "1e-7", "--device", "cpu", "--output", str(out)]
    result = CliRunner().invoke(unlearn_command, args)
    assert result.exit_code == 0, result.output
    assert "run health:" in result.output and "forget-did-not-move" in result.output
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["health"]["verdict"] == "forget-did-not-move"
    assert run_json["calibration"] is None


# ---- the scale rule ------------------------------------------------------------------------------

def test_calibration_follows_the_rule_and_leaves_the_weights_alone(tiny, corpora):
    auto = run(tiny, corpora, auto="all", auto_lr="sign-step")  # the one-step rule alone (real steps: test_scale_steps)
    calibration = auto.calibration
    topic = calibration["topics"][0]
    chosen = calibration["chosen"]
    assert calibration["auto"] == ["alpha", "coeff", "lr"]
    assert chosen["steering_coeff"] == [pytest.approx(scale.COEFF_RATIO * topic["forget_norm"], rel=1e-3)]
    assert chosen["lr"] == pytest.approx(scale.REACH * topic["distance"] / (8 * topic["approach"]), rel=1e-2)
    assert chosen["alpha"] == [pytest.approx(topic["distance"] / (scale.RETAIN_BALANCE * topic["retain_norm"]), rel=1e-2)]
    assert topic["approach"] > 0 and topic["response"] >= topic["approach"]
    assert auto.config.lr == chosen["lr"] and auto.config.alpha == chosen["alpha"]
    # The probe step is undone: the same run with the chosen values given explicitly is identical.
    explicit = run(tiny, corpora, lr=chosen["lr"], alpha=chosen["alpha"], steering_coeff=chosen["steering_coeff"])
    assert [r["forget_loss"] for r in explicit.records] == pytest.approx([r["forget_loss"] for r in auto.records])


def test_calibrated_lr_follows_the_run_length_and_only_auto_settings_change(tiny, corpora):
    long = run(tiny, corpora, auto="lr", steps=8, auto_lr="sign-step")
    short = run(tiny, corpora, auto="lr", steps=4, auto_lr="sign-step")
    assert short.calibration["chosen"]["lr"] == pytest.approx(2 * long.calibration["chosen"]["lr"], rel=2e-2)
    assert set(long.calibration["chosen"]) == {"lr"}
    assert long.config.alpha == [10.0] and long.config.steering_coeff == [5.0]
    adaptive = run(tiny, corpora, auto="coeff", method="adaptive", beta=7.0)
    assert adaptive.config.beta == [scale.COEFF_RATIO]


def test_auto_rejects_unknown_settings(corpora):
    from rmu.config import ConfigError

    with pytest.raises(ConfigError, match="auto"):
        make_config(options(corpora, auto="lr,momentum"))


# ---- massive activations -------------------------------------------------------------------------

def test_massive_activations_finds_the_planted_dimensions():
    import torch

    hidden = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    hidden[..., 3] += 200.0  # a large, nearly constant value at every token, as in Gemma 3
    real = torch.ones(2, 5, dtype=torch.bool)
    real[1, 4] = False  # a pad: not counted
    found = scale.massive_activations(hidden, real)
    assert found.dims == [3]
    assert found.share > 0.99
    others = [d for d in range(16) if d != 3]
    assert found.other_norm == pytest.approx(float(hidden[real][:, others].norm(dim=-1).mean()), rel=1e-5)
    plain = scale.massive_activations(torch.randn(2, 5, 16), real)
    assert plain.dims == [] and plain.share == 0.0


def test_probe_step_follows_the_smallest_trained_tensor():
    import torch

    small, large = torch.full((4, 4), 0.02), torch.full((4,), 30.0)
    assert scale.probe_step([small, large], 1e-3) == pytest.approx(2e-5)
    assert scale.probe_step([large], 1e-3) == pytest.approx(3e-2)


def test_massive_activation_warning_replaces_the_lr_advice(corpora):
    import torch

    model, tokenizer = tiny_model("llama", num_layers=4)
    with torch.no_grad():  # plant a massive dimension: every token's embedding carries 300 in dimension 5
        model.get_input_embeddings().weight[:, 5] = 300.0
    config = make_config(options(corpora, lr=1e-7, steering_coeff=0.5, auto="coeff"))
    result = unlearn(config, model=model, tokenizer=tokenizer, progress=False)
    topic = result.health["topics"][0]
    assert topic["massive_share"] > 0.9 and topic["informative_norm"] < 0.1 * topic["frozen_forget_norm"]
    assert codes(result) == {"massive-activations", "forget-did-not-move"}
    messages = " ".join(w["message"] for w in result.health["warnings"])
    assert "raise --lr" not in messages and "massive activations" in messages
    calibrated = result.calibration["topics"][0]
    assert calibrated["massive_dims"] == [5] and calibrated["massive_share"] > 0.9
    # without the planted dimension the same run gives the lr advice and no massive-activation warning
    plain = run(tiny_model("llama", num_layers=4), corpora, lr=1e-7, steering_coeff=0.5)
    assert "massive-activations" not in codes(plain) and plain.health["topics"][0]["massive_share"] < 0.9
