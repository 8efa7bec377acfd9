"""The shape of rmu.eval: old module names still work, and ``rmu eval`` goes through the one entry."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import rmu.eval
from rmu.cli.eval import command
from rmu.eval.scoring import decision_scores, predict
from rmu.testing import save_tiny_model


def test_the_old_module_names_re_export_the_package():
    import rmu.evaluate
    import rmu.lm_eval_backend
    import rmu.tasks

    assert rmu.evaluate.evaluate is rmu.eval.evaluate and rmu.evaluate.perplexity is rmu.eval.perplexity
    assert rmu.evaluate.TaskResult is rmu.eval.TaskResult and rmu.evaluate.SCORINGS is rmu.eval.SCORINGS
    assert rmu.evaluate.unique_name is rmu.eval.tasks.unique_name
    assert rmu.tasks.Task is rmu.eval.Task and rmu.tasks.load_task is rmu.eval.load_task
    assert rmu.lm_eval_backend.evaluate_with_lm_eval is rmu.eval.lm_eval_backend.evaluate_with_lm_eval
    for module in (rmu.evaluate, rmu.tasks, rmu.lm_eval_backend):
        assert module.__doc__.startswith("Moved to")


def test_the_decision_rule_is_per_character_for_answer_texts_only():
    lls, texts = [-4.0, -6.0], ["ab", "abcdef"]
    assert decision_scores(lls, texts, "letter") == lls
    assert decision_scores(lls, texts, "cloze") == decision_scores(lls, texts, "completion") == [-2.0, -1.0]
    assert predict(0, lls, texts, 1, "letter").predicted == 0
    assert predict(0, lls, texts, 1, "cloze").correct


def test_evaluate_refuses_what_no_backend_runs():
    with pytest.raises(ValueError, match="native backend only"):
        rmu.eval.evaluate(None, None, [], scoring="completion", backend="lm-eval")
    with pytest.raises(ValueError, match="unknown backend 'vllm'"):
        rmu.eval.evaluate(None, None, [], backend="vllm")
    with pytest.raises(ValueError, match="lm-eval backend only"):
        rmu.eval.evaluate(None, None, [], task_dir="somewhere")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("ckpt") / "tiny", "llama", seed=1)


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps({"question": "2 + 2 =", "choices": ["3", "4", "5"], "answer": 1}) + "\n")
    return path


def test_the_command_calls_the_one_entry_with_its_options(checkpoint, task_file, tmp_path, monkeypatch):
    calls = []

    def recording_evaluate(model, tokenizer, tasks, **options):
        calls.append(options)
        return {}

    monkeypatch.setattr("rmu.cli.eval.evaluate", recording_evaluate)
    for backend in ("native", "lm-eval"):
        result = CliRunner().invoke(command, ["--model", str(checkpoint), "--task", str(task_file), "--backend",
                                              backend, "--lm-eval-task-dir", str(tmp_path / backend),
                                              "--device", "cpu", "--no-progress"])
        assert result.exit_code == 0, result.output
    assert [call["backend"] for call in calls] == ["native", "lm-eval"]
    assert calls[0]["task_dir"] is None and calls[1]["task_dir"] == str(tmp_path / "lm-eval")


def test_completion_on_lm_eval_is_refused_before_loading(checkpoint, task_file, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the option was refused")

    monkeypatch.setattr("rmu.cli.eval.load_whole_model", refuse)
    result = CliRunner().invoke(command, ["--model", str(checkpoint), "--task", str(task_file), "--backend", "lm-eval",
                                          "--scoring", "completion", "--device", "cpu"])
    assert result.exit_code == 2 and "native backend only" in result.output
