"""Bad inputs are refused early, in one or two lines naming the input and the fix (issue #10, part B).

Every case runs the real command line (click's runner, in process, so that the loaders can be replaced
by tripwires proving nothing was loaded); one test starts a real process to see the exit code and the
traceback that ``--debug`` / ``RMU_DEBUG=1`` show.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import rmu.loading
from conftest import write_workspace
from rmu.cli import main
from rmu.config import ConfigError, make_config
from rmu.errors import RmuError
from rmu.tasks import load_mmlu
from rmu.testing import save_tiny_model

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = write_workspace(tmp_path_factory.mktemp("bad-inputs"), layers=4, lines=8)
    save_tiny_model(folder / "gpt2", "gpt2", num_layers=4)  # n_positions 512
    (folder / "task.jsonl").write_text(json.dumps({"question": "Which?", "choices": ["a", "b"], "answer": 0}) + "\n")
    return folder


@pytest.fixture
def no_loading(monkeypatch):
    """Tripwires: any attempt to read weights fails the test."""
    def tripwire(*args, **kwargs):
        raise AssertionError("weights were loaded before the input was refused")

    monkeypatch.setattr(rmu.loading, "load_model", tripwire)
    monkeypatch.setattr(rmu.loading, "materialise", tripwire)
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", tripwire)


def unlearn_args(workspace, *extra, model="model"):
    return ["unlearn", "--model", str(workspace / model), "--forget", f"bio={workspace / 'bio.jsonl'}",
            "--retain", str(workspace / "retain.txt"), "--layer", "2", "--steps", "2", "--batch-size", "2",
            "--min-len", "0", "--max-len", "32", "--retain-max-len", "32", "--device", "cpu", "--quiet",
            *map(str, extra)]


def refused(args, *words, env=None):
    """Run the CLI; assert a clean refusal (exit 1, no traceback, at most two lines) naming ``words``."""
    result = CliRunner().invoke(main, list(map(str, args)), env=env)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}"  # not a traceback
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2, result.output
    for word in words:
        assert word in result.output, f"{word!r} not in {result.output!r}"
    return result.output


# ---------------------------------------------------------------------------------------------
# 6. Validation before loading anything


@pytest.mark.parametrize("extra, words", [
    (["--alpha", "-5"], ["--alpha -5 is negative", "give 0 or more"]),
    (["--lr", "inf"], ["--lr is inf", "finite"]),
    (["--lr", "nan"], ["--lr is nan", "finite"]),
    (["--lr", "-1"], ["--lr must be positive"]),
    (["--steering-coeff", "nan"], ["--steering-coeff is nan", "finite"]),
    (["--steering-coeff", "-6.5"], ["--steering-coeff -6.5 is negative"]),
    (["--method", "adaptive", "--beta", "nan"], ["--beta is nan", "finite"]),
    (["--noise", "inf"], ["--noise is inf"]),
    (["--min-len", "-5"], ["--min-len -5 is negative", "0 or more"]),
    (["--max-len", "99999999999999999999"], ["--max-len 99999999999999999999 is too large", "at most"]),
    (["--seed", "-1"], ["--seed -1 is out of range"]),
    (["--device", "banana"], ["--device 'banana' is not a device", "cpu"]),
    (["--params", "nothing*"], ["--params nothing* matched no weight", "mlp.down_proj.weight"]),
    (["--layer", "7"], ["--layer 7 is outside the model: it has layers 0..3"]),
])
def test_bad_option_values_are_refused_before_loading(workspace, no_loading, extra, words):
    refused(unlearn_args(workspace, *extra), *words)


def test_sweeps_refuse_bad_values_before_loading(workspace, tmp_path, no_loading):
    for sweep, grid in (("layers", ["--layers", "1,2"]), ("coeff", ["--values", "1,2"])):
        refused(["sweep", sweep, *grid, "--model", workspace / "model", "--forget", f"bio={workspace / 'bio.jsonl'}",
                 "--retain", workspace / "retain.txt", "--forget-task", workspace / "task.jsonl",
                 "--retain-task", workspace / "task.jsonl", "--output", tmp_path / sweep, "--lr", "nan"],
                "--lr is nan")


def test_device_cuda_without_cuda_is_refused(workspace, no_loading):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    refused(unlearn_args(workspace, "--device", "cuda"), "--device cuda", "no CUDA device", "--device cpu")
    refused(["eval", "--model", workspace / "model", "--task", workspace / "task.jsonl", "--device", "cuda"],
            "--device cuda")


def test_eval_refuses_an_unknown_device_before_loading(workspace, no_loading):
    refused(["eval", "--model", workspace / "model", "--task", workspace / "task.jsonl", "--device", "banana"],
            "--device 'banana' is not a device")


def test_a_topic_without_a_name_is_refused(workspace, no_loading):
    args = unlearn_args(workspace)
    args[args.index("--forget") + 1] = f"={workspace / 'bio.jsonl'}"
    refused(args, "the topic name is empty", "NAME=FILE")
    args[args.index("--forget") + 1] = "bio="
    refused(args, "no corpus after the topic name")


@pytest.mark.parametrize("line, option", [("lr: yes", "--lr"), ("steps: true", "--steps"), ("alpha: [1, on]", "--alpha"),
                                          ("overwrite: 1", "--overwrite")])
def test_yaml_values_must_have_the_options_type(workspace, tmp_path, no_loading, line, option):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {workspace / 'model'}\nforget: {workspace / 'bio.jsonl'}\n"
                      f"retain: {workspace / 'retain.txt'}\n{line}\n")
    refused(["unlearn", "--config", config], option, "true" if option != "--overwrite" else "not true or false")


def test_yaml_numbers_keep_working():
    base = dict(model="m", forget={"bio": "b.jsonl"}, retain=["r.txt"])
    assert make_config(base | {"lr": 1}).lr == 1.0  # a YAML int for a float option
    assert make_config(base | {"lr": "5e-5"}).lr == 5e-5  # PyYAML reads 5e-5 (no dot) as a string
    assert make_config(base | {"alpha": [1, 2.5], "forget": {"a": "a", "b": "b"}}).alpha == [1.0, 2.5]
    with pytest.raises(ConfigError, match="unknown option 'lrr'"):
        make_config(base | {"lrr": 1})


def test_null_text_rows_are_refused_naming_file_and_line(workspace, tmp_path, no_loading):
    corpus = tmp_path / "nulls.jsonl"
    corpus.write_text('{"text": "a fine document about toxins"}\n{"text": null}\n')
    args = unlearn_args(workspace)
    args[args.index("--forget") + 1] = f"bio={corpus}"
    refused(args, f"{corpus}, line 2", '"text" is null')
    corpus.write_text('[{"text": "a fine document about toxins"}, {"text": 3}]')
    corpus = corpus.rename(tmp_path / "numbers.json")
    args[args.index("--forget") + 1] = f"bio={corpus}"
    refused(args, f"{corpus}, item 1", '"text" is a number')


def test_max_len_beyond_the_position_limit_is_refused(workspace, no_loading):
    refused(unlearn_args(workspace, "--max-len", 513, model="gpt2"),
            "--max-len 513 exceeds the model's position limit of 512 tokens", "give at most 512")
    refused(unlearn_args(workspace, "--retain-max-len", 1024, model="gpt2"),
            "--retain-max-len 1024 exceeds the model's position limit of 512")


def test_max_len_at_the_position_limit_runs(workspace, tmp_path):
    result = CliRunner().invoke(main, unlearn_args(workspace, "--max-len", 512, "--retain-max-len", 512, model="gpt2"))
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------------------------
# 7. Messages, not tracebacks


def test_garbage_control_vectors_are_refused_before_loading(workspace, tmp_path, no_loading):
    garbage = tmp_path / "vectors.safetensors"
    garbage.write_bytes(os.urandom(300))
    refused(unlearn_args(workspace, "--control-vectors", garbage), f"--control-vectors {garbage}",
            "not a safetensors file")
    from safetensors.torch import save_file

    save_file({"bio": torch.ones(8)}, str(garbage))
    refused(unlearn_args(workspace, "--control-vectors", garbage), "vector 'bio' has shape (8,)", "hidden size is 64")


def test_broken_yaml_and_python_tags_are_refused_in_one_line(tmp_path, no_loading):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: m\nforget: [a.jsonl\nretain: r.txt\n")
    refused(["unlearn", "--config", broken], f"config file {broken}, line 3: not valid YAML")
    witness = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'model: !!python/object/apply:os.system ["touch {witness}"]\n')
    refused(["unlearn", "--config", evil], f"config file {evil}, line 1",
            "refused the tag !!python/object/apply:os.system", "safe_load")
    assert not witness.exists()
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"model: \xff\xfe\n")
    refused(["unlearn", "--config", binary], f"config file {binary} is not UTF-8")


def test_pickle_checkpoints_are_refused_unopened(workspace, tmp_path, no_loading):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(workspace / "model" / name, folder / name)
    witness = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {witness}",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    words = ["refused: pickle checkpoint", "pytorch_model.bin", "convert to safetensors"]
    refused(unlearn_args(workspace, model=folder), *words)  # an absolute path replaces the workspace
    refused(["eval", "--model", folder, "--task", workspace / "task.jsonl", "--device", "cpu"], *words)
    assert not witness.exists()


def test_model_code_shipped_with_a_checkpoint_is_not_run_by_default(workspace, tmp_path, no_loading):
    folder = tmp_path / "remote"
    shutil.copytree(workspace / "model", folder)
    witness = tmp_path / "ran"
    config = json.loads((folder / "config.json").read_text())
    config |= {"model_type": "shipped", "auto_map": {"AutoConfig": "shipped.Config", "AutoModelForCausalLM": "shipped.Model"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "shipped.py").write_text(f"open({str(witness)!r}, 'w').write('ran')\n"
                                       "from transformers import LlamaConfig as Config, LlamaForCausalLM as Model\n")
    words = ["ships its own model code", "--trust-remote-code"]
    refused(unlearn_args(workspace, model=folder), *words)
    refused(["eval", "--model", folder, "--task", workspace / "task.jsonl", "--device", "cpu"], *words)
    assert not witness.exists()


def test_a_folder_with_only_config_names_the_missing_files(workspace, tmp_path, no_loading):
    folder = tmp_path / "only-config"
    folder.mkdir()
    shutil.copy(workspace / "model" / "config.json", folder / "config.json")
    words = [f"{folder} is not a complete checkpoint", "missing model.safetensors", "the tokenizer"]
    refused(unlearn_args(workspace, model=folder), *words)
    refused(["eval", "--model", folder, "--task", workspace / "task.jsonl", "--device", "cpu"], *words)


def test_a_binary_corpus_names_file_and_line(workspace, tmp_path, no_loading):
    corpus = tmp_path / "binary.txt"
    corpus.write_bytes(b"a first line of text\n\x00\x9f\x92\x96 binary\n")
    args = unlearn_args(workspace)
    args[args.index("--retain") + 1] = str(corpus)
    refused(args, f"{corpus}, line 2: not UTF-8 text", "save the file as UTF-8")


def test_output_dot_is_a_one_line_error(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thesis.txt").write_text("mine")
    refused(unlearn_args(workspace, "--output", "."), "--output")
    assert (tmp_path / "thesis.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# 8. Eval task checks


@pytest.mark.parametrize("choices, words", [
    (["", ""], ["choice 1 is empty"]),
    (["Paris", "  "], ["choice 2 is empty"]),
    (["Paris", "Rome", "Paris"], ["choices 1 and 3 are the same ('Paris')"]),
    ([f"c{i}" for i in range(27)], ["27 choices; at most 26"]),
    (["Paris", None], ["choice 2 is empty"]),
])
def test_eval_refuses_bad_choices_naming_file_and_question(workspace, tmp_path, no_loading, choices, words):
    task = tmp_path / "quiz.jsonl"
    task.write_text(json.dumps({"question": "Capital of Italy?", "choices": ["Rome", "Oslo"], "answer": 0}) + "\n"
                    + json.dumps({"question": "Capital of France?", "choices": choices, "answer": 0}) + "\n")
    output = refused(["eval", "--model", workspace / "model", "--task", task, "--device", "cpu"], *words)
    assert f"{task} line 2" in output
    if len(choices) <= 26:
        assert "'Capital of France?'" in output


def test_named_mmlu_is_scored_as_published_with_its_repeated_choices(tmp_path):
    published = tmp_path / "mmlu.jsonl"
    published.write_text(json.dumps({"question": "Q", "answer_a": "x", "answer_b": "x", "answer_c": "y",
                                     "answer_d": "z", "correct_answer": "C", "topic": "virology"}) + "\n")
    assert load_mmlu(["virology"], path=published).questions[0].choices == ("x", "x", "y", "z")


# ---------------------------------------------------------------------------------------------
# The rule: expected failures are messages; --debug / RMU_DEBUG=1 show the traceback; bugs keep theirs


def test_debug_flag_shows_the_traceback(workspace):
    result = CliRunner().invoke(main, ["--debug", *unlearn_args(workspace, "--lr", "nan")])
    assert isinstance(result.exception, ConfigError) and "--lr is nan" in str(result.exception)
    result = CliRunner().invoke(main, unlearn_args(workspace, "--lr", "nan"), env={"RMU_DEBUG": "1"})
    assert isinstance(result.exception, ConfigError)


def test_unexpected_errors_keep_their_traceback(workspace, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("rmu.preflight.check_run", bug)
    result = CliRunner().invoke(main, unlearn_args(workspace))
    assert isinstance(result.exception, ZeroDivisionError)


def test_every_project_error_is_an_rmu_error():
    from rmu.analysis import AnalysisError
    from rmu.assets import AssetError
    from rmu.attacks import AttackError
    from rmu.data import DataError
    from rmu.engine import UnlearnError
    from rmu.loading import CheckpointError
    from rmu.structure import StructureError
    from rmu.tasks import TaskFormatError, UnknownTaskError

    for error in (ConfigError, DataError, UnlearnError, CheckpointError, StructureError, TaskFormatError,
                  UnknownTaskError, AnalysisError, AttackError, AssetError):
        assert issubclass(error, RmuError), error


def test_a_real_process_prints_one_line_and_a_traceback_only_when_asked(workspace):
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    env.pop("RMU_DEBUG", None)
    command = [sys.executable, "-m", "rmu", *unlearn_args(workspace, "--alpha", "-5")]
    plain = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == ["Error: invalid configuration:",
                                                 "  --alpha -5 is negative; it is the weight of the retain loss: give 0 or more"]
    debug = subprocess.run(command, capture_output=True, text=True, env=env | {"RMU_DEBUG": "1"}, timeout=300)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "rmu.config.ConfigError: invalid configuration" in debug.stderr
