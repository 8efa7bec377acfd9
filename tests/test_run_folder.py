"""Run folders and outputs: the overwrite rule, overlap with inputs, unwritable outputs, the lock,
the divergence rule, reruns after an early stop, and the resume fingerprint (README, "Reliability")."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import unlearn_options as options
import rmu
from rmu import divergence, outputs
from rmu.cli import main
from rmu.config import ConfigError, make_config
from rmu.engine import UnlearnError, unlearn
from rmu.testing import save_tiny_model

SRC = str(Path(rmu.__file__).resolve().parents[1])


def cli_args(workspace, output, *extra):
    return ["unlearn", "--model", str(workspace / "model"), "--forget", f"bio={workspace / 'bio.jsonl'}",
            "--retain", str(workspace / "retain.txt"), "--layer", "3", "--steps", "6", "--batch-size", "2",
            "--min-len", "0", "--lr", "5e-3", "--alpha", "10", "--max-len", "32", "--retain-max-len", "32",
            "--device", "cpu", "--output", str(output), "--quiet", *map(str, extra)]


def run_cli(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def folder_state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def forbid_loading(monkeypatch):
    """Make any model load or corpus read fail loudly: a refusal must come before them."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model or a corpus was loaded before the output was refused")

    monkeypatch.setattr("rmu.engine._read_corpora", refuse)
    monkeypatch.setattr("rmu.engine._load", refuse)
    monkeypatch.setattr("rmu.analysis.common.load_full_model", refuse)


# -- 1. the overwrite rule and outputs that overlap inputs ----------------------------------------


def test_overwrite_never_deletes_a_folder_rmu_did_not_write(workspace, tmp_path, monkeypatch):
    forbid_loading(monkeypatch)
    thesis = tmp_path / "p" / "thesis.txt"
    thesis.parent.mkdir()
    thesis.write_text("four years of work")
    result = run_cli(*cli_args(workspace, tmp_path / "p", "--overwrite"))
    assert result.exit_code != 0
    assert "holds files rmu did not write" in result.output and "even with --overwrite" in result.output
    assert thesis.read_text() == "four years of work"


def test_overwrite_replaces_a_run_rmu_wrote(workspace, tmp_path):
    output = tmp_path / "run"
    unlearn(make_config(options(workspace, output=str(output))), progress=False)
    marker = json.loads((output / outputs.MARKER).read_text())
    assert marker["written_by"] == "rmu unlearn"
    with pytest.raises(ConfigError, match="already holds a finished run; pass --overwrite"):
        unlearn(make_config(options(workspace, output=str(output))), progress=False)
    unlearn(make_config(options(workspace, output=str(output), overwrite=True, seed=4)), progress=False)
    assert json.loads((output / "run.json").read_text())["seed"] == 4
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["run"]


@pytest.mark.parametrize("where", ["model", "inside-model", "contains-model", "corpus", "contains-corpus",
                                   "dot-model"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_overlapping_an_input_is_refused(workspace, where, overwrite, monkeypatch):
    forbid_loading(monkeypatch)
    monkeypatch.chdir(workspace)
    output = {"model": workspace / "model", "inside-model": workspace / "model" / "out",
              "contains-model": workspace, "corpus": workspace / "bio.jsonl", "contains-corpus": workspace,
              "dot-model": "./model"}[where]
    before = folder_state(workspace / "model")
    with pytest.raises(ConfigError, match=r"is an input|lies inside the input|contains the input|is a file"):
        # "model" spelled as given on the command line: ./model and the absolute path are the same input
        unlearn(make_config(options(workspace, model="model", output=str(output), overwrite=overwrite)),
                progress=False)
    assert folder_state(workspace / "model") == before


@pytest.mark.parametrize("command", ["analyze", "attack", "report", "sweep", "demo"])
def test_every_command_that_writes_a_folder_follows_the_same_rule(workspace, tmp_path, command, monkeypatch):
    forbid_loading(monkeypatch)
    model, questions = str(workspace / "model"), str(workspace / "questions.jsonl")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    sweep = ["sweep", "layers", "--layers", "2", "--model", model, "--forget", f"bio={workspace / 'bio.jsonl'}",
             "--retain", str(workspace / "retain.txt"), "--forget-task", questions, "--retain-task", questions]
    into = {
        "analyze": lambda out: ["analyze", "confidence", "--model", f"base={model}", "--questions", questions,
                                "--output", out],
        "attack": lambda out: ["attack", "probe", "--model", f"base={model}", "--questions", questions, "--output", out],
        "report": lambda out: ["report", str(workspace / "model"), "--output", out],
        "sweep": lambda out: [*sweep, "--output", out, "--overwrite"],
        "demo": lambda out: ["demo", "--output", out],
    }[command]
    result = run_cli(*into(foreign))
    assert result.exit_code != 0 and "holds files rmu did not write" in result.output, result.output
    assert (foreign / "notes.txt").read_text() == "mine"
    if command != "demo":  # the demo's only input is SmolLM2's folder
        result = run_cli(*into(str(workspace / "model")))
        assert result.exit_code != 0 and "is an input" in result.output, result.output


def test_a_folder_rmu_wrote_is_written_again(workspace, tmp_path):
    run = tmp_path / "run"
    unlearn(make_config(options(workspace, output=str(run))), progress=False)
    for _ in range(2):  # the second time into a folder the first one marked
        result = run_cli("analyze", "norms", run, "--output", tmp_path / "norms")
        assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "norms" / outputs.MARKER).read_text())["written_by"] == "rmu analyze norms"
    result = run_cli("report", tmp_path / "norms", "--output", tmp_path / "norms" / "report")  # inside what it reads
    assert result.exit_code == 0, result.output


def test_unwritable_outputs_are_refused_before_loading(workspace, tmp_path, monkeypatch):
    forbid_loading(monkeypatch)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="lies under .*a-file, which is a file"):
        unlearn(make_config(options(workspace, output=str(a_file / "run"))), progress=False)
    if Path("/sys").is_dir():
        with pytest.raises(ConfigError, match="cannot be written"):
            unlearn(make_config(options(workspace, output="/sys/rmu-run")), progress=False)


def test_eval_output_is_checked_before_the_evaluation(workspace, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before --output was refused")

    monkeypatch.setattr("rmu.cli.eval.load_whole_model", refuse)
    base = ["eval", "--model", workspace / "model", "--task", workspace / "questions.jsonl", "--scoring", "cloze",
            "--device", "cpu", "--no-progress", "--output"]
    (tmp_path / "notes.json").write_text('{"mine": true}')
    cases = {workspace / "questions.jsonl": "is or lies inside the input",
             workspace / "model" / "results.json": "is or lies inside the input",
             tmp_path / "notes.json": "not a results file rmu wrote",
             tmp_path / "notes.json" / "r.json": "which is a file"}
    if Path("/sys").is_dir():
        cases[Path("/sys/rmu/results.json")] = "cannot be written"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "task.yaml").write_text("mine")
    result = run_cli(*base[:-1], "--lm-eval-task-dir", mine)
    assert result.exit_code != 0 and "--lm-eval-task-dir" in result.output and "rmu did not write" in result.output
    for output, message in cases.items():
        result = run_cli(*base, output)
        assert result.exit_code != 0 and message in result.output, (output, result.output)
    assert json.loads((tmp_path / "notes.json").read_text()) == {"mine": True}

    monkeypatch.undo()
    results = tmp_path / "results.json"
    for _ in range(2):  # a results file rmu wrote is replaced
        result = run_cli(*base, results)
        assert result.exit_code == 0, result.output
    assert json.loads(results.read_text())["written_by"] == "rmu eval"


# -- 2. the lock -------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_output_fails_at_once_naming_the_holder(workspace, tmp_path, monkeypatch):
    output = tmp_path / "run"
    with outputs.OutputLock(outputs.resolved(output), "unlearn"):
        forbid_loading(monkeypatch)
        result = run_cli(*cli_args(workspace, output))
        assert result.exit_code != 0
        assert f"{output} is in use by another rmu run (pid {os.getpid()} on " in result.output
        assert "started" in result.output and "rmu unlearn" in result.output
        monkeypatch.undo()
    assert run_cli(*cli_args(workspace, output)).exit_code == 0  # released: the run goes ahead


def subprocess_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
                HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")


def test_concurrent_runs_on_one_output_never_clobber_each_other(workspace, tmp_path):
    """Three real processes started together on one output, --save-every 1 --overwrite."""
    output = tmp_path / "run"
    command = [sys.executable, "-m", "rmu", *cli_args(workspace, output, "--save-every", "1", "--overwrite")]
    processes = [subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
    finished = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    for code, out, err in finished:
        assert "Traceback" not in err, err
        assert code == 0 or "is in use by another rmu run (" in err, err
    assert any(code == 0 for code, _, _ in finished)
    run = json.loads((output / "run.json").read_text())
    assert run["status"] == "complete" and len(run["steps"]) == 6
    assert not (tmp_path / "run.incomplete").exists()


def test_the_lock_dies_with_its_process(tmp_path):
    folder = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from rmu.outputs import OutputLock, resolved
            lock = OutputLock(resolved({str(folder)!r}), "test").acquire()
            print("locked", flush=True)
            time.sleep(600)
        """)], env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(outputs.OutputError, match=f"in use by another rmu run \\(pid {holder.pid} "):
            outputs.OutputLock(outputs.resolved(folder), "test").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    outputs.OutputLock(outputs.resolved(folder), "test").acquire().release()  # kill -9 freed it


# -- 3. the divergence rule ----------------------------------------------------------------------


def test_an_exploding_run_stops_without_a_checkpoint(workspace, tmp_path):
    output = tmp_path / "boom"
    result = run_cli(*cli_args(workspace, output, "--steps", "8", "--lr", "1e4"))
    assert result.exit_code != 0
    assert "the run diverged at step 1 (topic 'bio')" in result.output and "Lower --lr (now 10000)" in result.output
    assert "no checkpoint was written" in result.output
    assert not output.exists() and not (tmp_path / "boom.incomplete" / "run.json").exists()

    result = run_cli(*cli_args(workspace, output, "--steps", "8", "--lr", "1e4", "--no-divergence-check"))
    assert result.exit_code == 0, result.output  # for people who study divergence
    assert json.loads((output / "run.json").read_text())["status"] == "complete"


def test_the_divergence_rule_reads_the_records(workspace):
    config = make_config(options(workspace, noise=3.0))

    def records(*losses):
        return [{"step": i, "topic": "bio", "forget_loss": f, "retain_loss": r} for i, (f, r) in enumerate(losses)]

    assert divergence.check(records((2.0, 0.0), (1.0, 10 * 150.0)), config) is None
    # retain loss / alpha less the noise floor nu^2 = 9 is the retain MSE: 209 - 9 = 200 = 100 x F0, not over it
    assert divergence.check(records((2.0, 0.0), (1.0, 10 * 209.0)), config) is None
    assert "the retain loss is 2100 (alpha 10; MSE less nu^2 201), over 100x the topic's first forget loss (2)" in \
        divergence.check(records((2.0, 0.0), (1.0, 10 * 210.0)), config)
    assert "the forget loss is 201, over 100x" in divergence.check(records((2.0, 0.0), (201.0, 0.0)), config)
    assert divergence.check(records((2.0, 0.0), (201.0, 0.0)), config.model_copy(update={"divergence_check": False})) \
        is None


# -- 4. no dead ends ----------------------------------------------------------------------------


class Stop(Exception):
    pass


def stop_at(step):
    def callback(record):
        if record["step"] == step:
            raise Stop
    return callback


def test_a_run_stopped_before_its_first_save_is_simply_rerun(workspace, tmp_path, caplog):
    output = tmp_path / "run"
    config = options(workspace, output=str(output), save_every=3)
    with pytest.raises(Stop):  # Ctrl-C at step 1, before the first save
        unlearn(make_config(config), callbacks=(stop_at(1),), progress=False)
    assert (tmp_path / "run.incomplete" / outputs.MARKER).is_file()
    with caplog.at_level(logging.WARNING, logger="rmu"):
        unlearn(make_config(config), progress=False)
    assert "stopped before its first save (nothing to resume); starting afresh" in caplog.text
    assert json.loads((output / "run.json").read_text())["status"] == "complete"

    # A non-finite loss at step 0 (c = 1e30 makes it inf; a NaN c is refused by the config), then
    # the same command with the mistake fixed.
    nan = tmp_path / "nan"
    with pytest.raises(UnlearnError, match="forget loss is inf at step 0"):
        unlearn(make_config(options(workspace, output=str(nan), save_every=2, steering_coeff=1e30)),
                progress=False)
    unlearn(make_config(options(workspace, output=str(nan), save_every=2)), progress=False)
    assert json.loads((nan / "run.json").read_text())["status"] == "complete"


def test_resume_says_what_it_found(workspace, tmp_path, caplog):
    output = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="rmu"):
        unlearn(make_config(options(workspace, output=str(output), resume=True, save_every=2)), progress=False)
    assert f"--resume: nothing to resume in {tmp_path / 'run.incomplete'} (no saved state" in caplog.text
    assert "starting afresh" in caplog.text
    with pytest.raises(ConfigError, match="already holds a finished run; there is nothing to resume"):
        unlearn(make_config(options(workspace, output=str(output), resume=True, save_every=2)), progress=False)

    other = tmp_path / "other"
    with pytest.raises(Stop):
        unlearn(make_config(options(workspace, output=str(other), save_every=2)), callbacks=(stop_at(3),),
                progress=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rmu"):
        resumed = unlearn(make_config(options(workspace, output=str(other), save_every=2, resume=True)),
                          progress=False)
    assert f"--resume: continuing the interrupted run in {tmp_path / 'other.incomplete'} from step 2" in caplog.text
    assert [r["step"] for r in resumed.records] == list(range(6))


# -- 5. the resume fingerprint ----------------------------------------------------------------------


def interrupted(workspace, folder: Path, **extra) -> dict:
    config = options(workspace, output=str(folder / "run"), save_every=2, **extra)
    with pytest.raises(Stop):
        unlearn(make_config(config), callbacks=(stop_at(3),), progress=False)
    return config


def test_resume_refuses_changed_inputs_and_options(workspace, tmp_path):
    corpus = tmp_path / "bio.jsonl"
    corpus.write_text((workspace / "bio.jsonl").read_text())
    config = interrupted(workspace, tmp_path, forget={"bio": str(corpus)})

    corpus.write_text(corpus.read_text().replace("Toxin", "Venom"))  # another corpus at the same path
    with pytest.raises(ConfigError, match=r"forget corpus 'bio' \(.*bio.jsonl\) changed: its contents differ"):
        unlearn(make_config(config | {"resume": True}), progress=False)
    corpus.write_text((workspace / "bio.jsonl").read_text())

    with pytest.raises(ConfigError, match=r"--lr was 0.005, now 0.01"):
        unlearn(make_config(config | {"resume": True, "lr": 1e-2}), progress=False)

    model = tmp_path / "model"
    save_tiny_model(model, "llama", num_layers=6, seed=1)  # same shapes, other weights, another folder
    with pytest.raises(ConfigError, match=r"model .* changed: files .*model.safetensors.* differ"):
        unlearn(make_config(config | {"resume": True, "model": str(model)}), progress=False)

    resumed = unlearn(make_config(config | {"resume": True, "device": "cpu", "save_every": 1}), progress=False)
    assert [r["step"] for r in resumed.records] == list(range(6))  # resume-free options may change


def test_equivalent_paths_are_the_same_input(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace)
    config = interrupted(workspace, tmp_path, forget={"bio": "./bio.jsonl"}, retain=["retain.txt"])
    respelled = config | {"forget": {"bio": "bio.jsonl"}, "retain": [str(workspace / "retain.txt")],
                          "model": "./model", "resume": True}
    resumed = unlearn(make_config(respelled), progress=False)
    assert [r["step"] for r in resumed.records] == list(range(6))


def test_kill_9_then_resume_gives_the_uninterrupted_weights(workspace, tmp_path):
    """A real SIGKILL while --save-every 1 writes state, then --resume: the same weights, bit for bit."""
    straight = tmp_path / "straight"
    settings = dict(steps=8, noise=0.05, method="adaptive", beta=2.0)
    unlearn(make_config(options(workspace, output=str(straight), **settings)), progress=False)

    output = tmp_path / "killed"
    config = options(workspace, output=str(output), save_every=1, **settings)
    script = textwrap.dedent(f"""
        import time
        from rmu.config import make_config
        from rmu.engine import unlearn
        unlearn(make_config({config!r}), callbacks=(lambda record: time.sleep(0.5),), progress=False)
    """)
    victim = subprocess.Popen([sys.executable, "-c", script], env=subprocess_env())
    state = tmp_path / "killed.incomplete" / "resume" / "state.json"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and victim.poll() is None:
            if state.is_file() and json.loads(state.read_text())["next_step"] >= 3:
                break
            time.sleep(0.05)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert not output.exists(), "the run finished before it was killed"
    unlearn(make_config(config | {"resume": True}), progress=False)
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(output / "model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)
