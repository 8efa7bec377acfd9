"""``rmu unlearn`` end to end: outputs, refusals, clear errors, resume, control vector reuse."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import unlearn_options as options
from rmu.cli import main
from rmu.config import ConfigError, make_config
from rmu.engine import UnlearnError, unlearn


def run_cli(*args):
    result = CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)
    return result


def test_cli_writes_a_complete_checkpoint(workspace, tmp_path):
    output = tmp_path / "run"
    result = run_cli("unlearn", "--model", workspace / "model", "--forget", f"bio={workspace / 'bio.jsonl'}",
                     "--retain", workspace / "retain.txt", "--layer", 3, "--steps", 5, "--batch-size", 2,
                     "--min-len", 0, "--lr", 5e-3, "--alpha", 10, "--output", output, "--quiet")
    assert result.exit_code == 0, result.output
    run = json.loads((output / "run.json").read_text())
    assert run["status"] == "complete" and len(run["steps"]) == 5
    assert set(run["steps"][0]) >= {"step", "topic", "forget_loss", "retain_loss", "coeff", "forget_norm"}
    assert run["config"]["layer"] == 3 and run["versions"]["torch"] == torch.__version__
    vectors = load_file(str(output / "control_vectors.safetensors"))
    assert vectors["bio"].shape == (64,) and torch.allclose(vectors["bio"].norm(), torch.tensor(1.0))
    assert (vectors["bio"] >= 0).all()
    assert not (tmp_path / "run.incomplete").exists()

    base = AutoModelForCausalLM.from_pretrained(workspace / "model")
    unlearned = AutoModelForCausalLM.from_pretrained(output)
    assert unlearned.config.num_hidden_layers == 6  # the whole model, though only layers 0..3 were loaded
    changed = [n for n, p in unlearned.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed == [f"model.layers.{i}.mlp.down_proj.weight" for i in (1, 2, 3)]
    assert run["trained_parameters"] == changed


def test_partial_and_full_loading_give_the_same_run(workspace):
    partial = unlearn(make_config(options(workspace)), progress=False)
    full = unlearn(make_config(options(workspace, full_load=True)), progress=False)
    assert [r["forget_loss"] for r in partial.records] == [r["forget_loss"] for r in full.records]
    assert len(partial.model.get_decoder().layers) == 4 and len(full.model.get_decoder().layers) == 6


def test_finished_output_is_refused_without_overwrite(workspace, tmp_path):
    output = tmp_path / "run"
    unlearn(make_config(options(workspace, output=str(output))), progress=False)
    with pytest.raises(ConfigError, match="already holds a finished run; pass --overwrite"):
        unlearn(make_config(options(workspace, output=str(output))), progress=False)
    rerun = unlearn(make_config(options(workspace, output=str(output), overwrite=True, seed=4)), progress=False)
    assert json.loads((output / "run.json").read_text())["seed"] == 4 and rerun.output == output


class Interrupt(Exception):
    pass


def test_resume_reaches_the_uninterrupted_weights(workspace, tmp_path):
    noisy = dict(noise=0.05, method="adaptive", beta=2.0, steps=7)
    straight = unlearn(make_config(options(workspace, output=str(tmp_path / "a"), **noisy)), progress=False)

    def stop_at_step_4(record):
        if record["step"] == 4:
            raise Interrupt

    config_b = options(workspace, output=str(tmp_path / "b"), save_every=2, **noisy)
    with pytest.raises(Interrupt):
        unlearn(make_config(config_b), callbacks=(stop_at_step_4,), progress=False)
    assert not (tmp_path / "b").exists()  # nothing that looks like a finished run
    assert (tmp_path / "b.incomplete" / "resume" / "state.json").is_file()
    with pytest.raises(ConfigError, match="--resume to continue"):
        unlearn(make_config(config_b), progress=False)

    resumed = unlearn(make_config(config_b | {"resume": True}), progress=False)
    assert [r["step"] for r in resumed.records] == list(range(7))
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    for name in straight.trained_parameters:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-7)
    assert [r["retain_loss"] for r in resumed.records] == pytest.approx([r["retain_loss"] for r in straight.records])


def test_saved_control_vectors_repeat_a_run(workspace, tmp_path):
    first = unlearn(make_config(options(workspace, output=str(tmp_path / "first"), seed=11)), progress=False)
    again = unlearn(make_config(options(workspace, seed=99,
                                        control_vectors=str(tmp_path / "first" / "control_vectors.safetensors"))),
                    progress=False)
    assert [r["forget_loss"] for r in again.records] == [r["forget_loss"] for r in first.records]


def test_diverging_loss_stops_without_a_checkpoint(workspace, tmp_path):
    output = tmp_path / "nan"
    # A NaN coefficient is refused by the config; one whose square overflows float32 gives an infinite loss.
    with pytest.raises(UnlearnError, match=r"forget loss is inf at step 0 \(topic 'bio'\)"):
        unlearn(make_config(options(workspace, output=str(output), steering_coeff=1e30)), progress=False)
    assert not output.exists()
    assert not (tmp_path / "nan.incomplete" / "run.json").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(layer=9), "--layer 9 is outside the model: it has layers 0..5"),
        (dict(update_layers="2,4"), "must lie in 0..3"),
        (dict(params="mlp.nothing*"), "matched no weight"),
        (dict(forget={"bio": "missing.jsonl"}), "corpus file missing.jsonl does not exist"),
        (dict(forget={"a": "A", "b": "B"}, steering_coeff="1,2,3"), "--steering-coeff has 3 values but there are 2"),
        (dict(retain=["a", "b"]), "--retain has 2 corpora for 1 forget topics"),
        (dict(min_len=10_000), "no document longer than 10000 characters"),
    ],
)
def test_bad_input_gets_a_clear_error(workspace, change, message):
    with pytest.raises((ConfigError, UnlearnError, ValueError), match=message.replace("(", r"\(").replace(")", r"\)")):
        unlearn(make_config(options(workspace, **change)), progress=False)


def test_corpus_format_errors_name_file_and_line(workspace, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine document"}\n{"txt": "wrong field"}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl, line 2: expected an object with a \"text\" field"):
        unlearn(make_config(options(workspace, forget={"bio": str(broken)})), progress=False)
    broken.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(ValueError, match="broken.jsonl, line 2: not valid JSON"):
        unlearn(make_config(options(workspace, forget={"bio": str(broken)})), progress=False)


def test_yaml_config_with_flag_override(workspace, tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        f"model: {workspace / 'model'}\nforget:\n  bio: {workspace / 'bio.jsonl'}\nretain: {workspace / 'retain.txt'}\n"
        "layer: 3\nsteps: 3\nbatch-size: 2\nmin-len: 0\nmethod: adaptive\nbeta: 3\n"
    )
    result = run_cli("unlearn", "--config", config_file, "--steps", 2, "--output", tmp_path / "y", "--quiet")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "y" / "run.json").read_text())
    assert run["config"]["method"] == "adaptive" and len(run["steps"]) == 2
    assert run["coefficients"]["bio"] > 0
    assert [s["coeff"] for s in run["steps"]] == pytest.approx([run["coefficients"]["bio"]] * 2)


def test_cli_reports_errors_without_traceback(workspace):
    result = CliRunner().invoke(main, ["unlearn", "--model", str(workspace / "model"), "--retain", "x.txt"])
    assert result.exit_code != 0 and "missing --forget" in result.output
