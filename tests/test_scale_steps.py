"""The scale rule's lr over real steps (``--auto-lr steps``, rmu.scale.lr_from_real_steps) on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import straight_and_resumed, tiny_elements_options, unlearn_options, write_workspace
from rmu import scale
from rmu.cli import main
from rmu.cli.unlearn import command as unlearn_command
from rmu.config import make_config
from rmu.engine import calibrate, unlearn
from rmu.fingerprint import run_fingerprint
from rmu.testing import tiny_model


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_workspace(tmp_path_factory.mktemp("scale-steps"), "elements", layers=None, lines=16)


options = tiny_elements_options


def run(corpora, **extra):
    model, tokenizer = tiny_model("llama", seed=0)
    return unlearn(make_config(options(corpora, **extra)), model=model, tokenizer=tokenizer, progress=False)


# ---- the rule, with a constructed probe ----------------------------------------------------------

def even_probe(rate: float, calls: list | None = None):
    """A probe whose progress grows in proportion to lr and steps."""
    def probe(lr: float, steps: int):
        if calls is not None:
            calls.append((lr, steps))
        return [{"progress": rate * lr * steps, "retain_drift": 0.01}]
    return probe


def test_a_lagging_probe_raises_lr_by_its_shortfall_up_to_the_cap():
    calls = []
    # progress 0.025 after 8 steps at the rule's lr 1e-3 against the pace 8/80 = 0.1: 4x short
    lr, record = scale.lr_from_real_steps(1e-3, 80, 1, even_probe(3.125, calls=calls))
    assert calls == [(1e-3, 8)] and record["pace"] == pytest.approx(0.1)
    assert lr == pytest.approx(4e-3) and record["factor"] == pytest.approx(4.0) and record["shortfall"] == 4.0
    assert record["progress"] == [0.025] and record["retain_drift"] == [0.01]
    # 100x short: raised by MAX_FACTOR only
    lr, record = scale.lr_from_real_steps(1e-3, 80, 1, even_probe(0.125))
    assert lr == pytest.approx(scale.MAX_FACTOR * 1e-3) and record["shortfall"] == pytest.approx(100.0)


def test_the_raise_leaves_room_for_the_retain_drift():
    def drifting(lr, steps):
        return [{"progress": 0.001, "retain_drift": 0.05}]
    lr, record = scale.lr_from_real_steps(1e-3, 80, 1, drifting)  # 100x short, but 0.05 x 4 = DRIFT_LIMIT
    assert record["drift_room"] == pytest.approx(scale.DRIFT_LIMIT / 0.05) and lr == pytest.approx(4e-3)
    lr, record = scale.lr_from_real_steps(1e-3, 80, 1, lambda lr, steps: [{"progress": 0.001, "retain_drift": 0.5}])
    assert lr == 1e-3 and record["factor"] == 1.0  # already past the limit: no raise, and never a cut


def test_the_lr_is_never_lowered_and_a_diverged_probe_keeps_it():
    lr, record = scale.lr_from_real_steps(1e-3, 80, 1, even_probe(100.0))  # far ahead of the pace
    assert lr == 1e-3 and record["factor"] == 1.0 and record["shortfall"] < 1
    lr, record = scale.lr_from_real_steps(1e-3, 80, 1, lambda lr, steps: None)
    assert lr == 1e-3 and record["diverged"] is True


def test_two_topics_follow_the_faster_one_and_a_short_run_probes_its_own_length():
    def probe(lr, steps):
        return [{"progress": 0.05, "retain_drift": 0.0}, {"progress": 0.001, "retain_drift": 0.0}]
    lr, record = scale.lr_from_real_steps(1e-3, 160, 2, probe)
    assert lr == pytest.approx(2e-3)  # the first topic's shortfall (0.1 / 0.05), not the second's 100x
    calls = []
    lr, record = scale.lr_from_real_steps(1e-3, 3, 1, even_probe(1.0, calls=calls))
    assert calls == [(1e-3, 3)] and record["pace"] == 1.0


# ---- in the engine -------------------------------------------------------------------------------

def test_the_correction_goes_up_where_real_steps_lag_the_sign_step(corpora, monkeypatch):
    # Constructed case: the legacy AdamW (eps added to the uncorrected sqrt(v)) takes real steps that
    # cover less than its first sign step promises. The drift room is lifted: a random tiny model's
    # retain states drift by 20-50% at any lr (the room has its own test above).
    monkeypatch.setattr(scale, "DRIFT_LIMIT", 1e3)
    settings = dict(auto="lr", optimizer="adamw-legacy", steering_coeff=0.5, alpha=1.0)
    steps = run(corpora, **settings)
    sign = run(corpora, **settings, auto_lr="sign-step")
    record = steps.calibration["real_steps"]
    assert record["sign_step_lr"] == sign.config.lr == steps.calibration["topics"][0]["lr"]
    assert record["factor"] > 1 and steps.config.lr == record["lr"] > sign.config.lr
    assert record["progress"][0] < record["pace"] and record["factor"] == pytest.approx(
        min(record["pace"] / record["progress"][0], scale.MAX_FACTOR), rel=1e-2)
    # the probe's measurement is the health report's: the 8-step run at the rule's lr is the probe
    assert sign.health["topics"][0]["progress"] == pytest.approx(record["progress"][0], abs=1e-3)
    assert steps.health["topics"][0]["progress"] > sign.health["topics"][0]["progress"]


@pytest.mark.parametrize("extra", [dict(method="rmu", noise=0.05, steering_coeff=0.5),
                                   dict(method="adaptive", beta=2.0, mask_padding=True)])
def test_the_probe_puts_weights_optimizer_and_noise_back(corpora, monkeypatch, extra):
    monkeypatch.setattr(scale, "DRIFT_LIMIT", 1e3)  # let it raise lr
    auto = run(corpora, auto="lr", optimizer="adamw-legacy", alpha=1.0, **extra)
    assert auto.calibration["real_steps"]["factor"] > 1
    given = run(corpora, lr=auto.config.lr, optimizer="adamw-legacy", alpha=1.0, **extra)
    # the run after the probes is the run with the chosen lr given by hand, to the bit
    assert auto.records == given.records
    for name, value in auto.final_weights.items():
        assert torch.equal(value, given.final_weights[name])


def test_calibrate_leaves_the_model_as_it_was(corpora):
    model, tokenizer = tiny_model("llama", seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    calibration = calibrate(make_config(options(corpora, auto="all")), model=model, tokenizer=tokenizer)
    assert calibration["real_steps"]["steps_run"] >= scale.PROBE_STEPS
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) and p.grad is None


def test_the_probe_is_recorded_in_run_json_and_sign_step_keeps_the_one_step_rule(tmp_path, corpora):
    model = tmp_path / "model"
    from rmu.testing import save_tiny_model
    save_tiny_model(model, "llama", num_layers=4)
    common = ["--model", str(model), "--forget", f"f={corpora / 'forget.jsonl'}", "--retain",
              str(corpora / "retain.txt"), "--layer", "2", "--steps", "6", "--batch-size", "2", "--min-len", "0",
              "--max-len", "32", "--retain-max-len", "32", "--device", "cpu", "--auto", "all", "--quiet"]
    for name, extra in (("steps", []), ("sign", ["--auto-lr", "sign-step"])):
        result = CliRunner().invoke(unlearn_command, [*common, *extra, "--output", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    steps = json.loads((tmp_path / "steps" / "run.json").read_text())
    sign = json.loads((tmp_path / "sign" / "run.json").read_text())
    record = steps["calibration"]["real_steps"]
    assert set(record) >= {"sign_step_lr", "probe_steps", "pace", "progress", "retain_drift", "shortfall",
                           "drift_room", "factor", "lr", "rule", "steps_run", "seconds"}
    assert record["probe_steps"] == 6 and record["steps_run"] == 6 and record["pace"] == 1.0
    assert steps["config"]["lr"] == record["lr"] == steps["calibration"]["chosen"]["lr"]
    assert steps["config"]["auto_lr"] == "steps" and sign["config"]["auto_lr"] == "sign-step"
    assert "real_steps" not in sign["calibration"]
    assert sign["config"]["lr"] == sign["calibration"]["topics"][0]["lr"] == record["sign_step_lr"]


def test_resume_is_byte_identical_with_the_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "DRIFT_LIMIT", 1e3)
    folder = write_workspace(tmp_path / "ws", layers=4)
    values = unlearn_options(folder, layer=2, auto=["lr", "coeff"], noise=0.05, optimizer="adamw-legacy", alpha=1.0)
    straight, resumed = straight_and_resumed(values, tmp_path / "runs", stop_at_step=3)
    def measured(calibration):  # all but the wall time
        return calibration | {"real_steps": {k: v for k, v in calibration["real_steps"].items() if k != "seconds"}}
    assert measured(resumed.calibration) == measured(straight.calibration)
    assert straight.calibration["real_steps"]["factor"] > 1
    assert resumed.config.lr == straight.config.lr
    assert resumed.records == straight.records
    for name, value in straight.final_weights.items():
        assert torch.equal(value, resumed.final_weights[name])


def test_rmu_tune_draws_its_lr_from_the_real_steps_factor(tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "DRIFT_LIMIT", 1e3)  # let the tiny model's probe raise lr
    folder = write_workspace(tmp_path / "ws", "elements", layers=4, lines=16, questions=6)
    args = ["tune", "--model", str(folder / "model"), "--forget", f"f={folder / 'forget.jsonl'}",
            "--retain", str(folder / "retain.txt"), "--forget-questions", str(folder / "questions.jsonl"),
            "--retain-questions", str(folder / "questions.jsonl"), "--layer", "2", "--layers", "2",
            "--steps", "6", "--batch-size", "2", "--min-len", "0", "--max-len", "32", "--retain-max-len", "32",
            "--device", "cpu", "--scoring", "completion", "--trials", "1", "--output", str(tmp_path / "study"),
            "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    calibration = summary["calibrations"]["2"]
    real_steps, topic = calibration["real_steps"], calibration["topics"][0]
    assert real_steps["factor"] > 1 and real_steps["probe_steps"] == 6  # calibrated at the longest run
    one_step = scale.REACH * topic["distance"] / (6 * topic["approach"])
    trial = json.loads((tmp_path / "study" / "trials.json").read_text())["trials"][0]
    assert trial["params"]["lr_factor"] == 1.0  # the rule itself
    assert trial["settings"]["lr"] == pytest.approx(real_steps["factor"] * one_step, rel=1e-2)


def test_auto_lr_counts_in_the_fingerprint_only_with_auto_lr(corpora):
    with_lr = run_fingerprint(make_config(options(corpora, auto="lr")))["options"]
    without = run_fingerprint(make_config(options(corpora, auto="coeff", auto_lr="sign-step")))["options"]
    assert with_lr["auto_lr"] == "steps" and "auto_lr" not in without
