"""rmu tune on tiny models: a short study, its outputs, resume, two processes on one SQLite study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import write_workspace
from rmu.cli import main
from rmu.cli.unlearn import command as unlearn_command
from rmu.tasks import load_task
from rmu.tune import TuneError, TuneSettings, split_halves, tune


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = write_workspace(tmp_path_factory.mktemp("tune"), "elements", layers=4, lines=16)
    forget = [{"question": f"The symbol of element {i} is", "choices": ["Fe", "O", "H", "N"], "answer": i % 4}
              for i in range(6)]
    retain = [{"question": f"The capital of country {i} is", "choices": ["Paris", "Rome", "Oslo", "Bern"],
               "answer": (i + 1) % 4} for i in range(6)]
    (folder / "forget_q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in forget))
    (folder / "retain_q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in retain))
    (folder / "general.txt").write_text("The quick brown fox jumps over the lazy dog.\nParis is a city.\n")
    return folder


def cli_args(workspace, output, *extra):
    return ["--model", str(workspace / "model"), "--forget", f"f={workspace / 'forget.jsonl'}",
            "--retain", str(workspace / "retain.txt"), "--forget-questions", str(workspace / "forget_q.jsonl"),
            "--retain-questions", str(workspace / "retain_q.jsonl"), "--layer", "2", "--layers", "1,2",
            "--steps", "4", "--batch-size", "2", "--min-len", "0", "--max-len", "32", "--retain-max-len", "32",
            "--device", "cpu", "--scoring", "completion", "--output", str(output), "--quiet", *extra]


def tune_args(*args) -> list[str]:
    """``rmu tune`` through the command group, which turns rmu's errors into one-line messages."""
    return ["tune", *cli_args(*args)]


def test_three_trial_study_writes_every_output_and_best_yaml_runs(workspace, tmp_path):
    out = tmp_path / "study"
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "3", "--seeds", "2",
                                                       "--general-text", str(workspace / "general.txt")))
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials["trials"]) == 3
    first = trials["trials"][0]
    # The study starts from the scale rule: factors 1, coefficient ratio 2, the given layer and steps.
    assert first["params"] == {"method": "adaptive", "layer": 2, "steps": 4, "coeff_ratio": 2.0, "lr_factor": 1.0,
                               "alpha_factor": 1.0, "noise_ratio": 0.0}
    for trial in trials["trials"]:
        assert trial["state"] in ("COMPLETE", "PRUNED") and trial["seconds"] > 0
        assert set(trial["settings"]) >= {"method", "layer", "steps", "lr", "alpha", "noise"}
        if trial["state"] == "COMPLETE":
            assert set(trial["scores"]) == {"forget_accuracy", "forget_probability", "retain_accuracy", "perplexity"}
            assert len(trial["constraints"]) == 2  # retain floor and perplexity rise
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"]["perplexity"] > 0 and summary["chance"] == 0.25
    assert [r["seed"] for r in summary["seeds"]["runs"]] == [42, 43]
    assert set(summary["seeds"]["forget_accuracy"]) == {"mean", "std"}
    assert (out / "pareto.png").stat().st_size > 0 and (out / "study.db").is_file()
    import optuna

    study = optuna.load_study(study_name="rmu-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[0].intermediate_values.keys() == {50}  # half way, comparable across run lengths

    best = yaml.safe_load((out / "best.yaml").read_text())
    chosen = summary["best"]["settings"]
    assert best["lr"] == chosen["lr"] and best["method"] == chosen["method"] and best["layer"] == chosen["layer"]
    assert best["model"] == str(workspace / "model") and best["forget"] == {"f": str(workspace / "forget.jsonl")}
    run = CliRunner().invoke(unlearn_command, ["--config", str(out / "best.yaml"), "--output", str(tmp_path / "run"),
                                               "--quiet"])
    assert run.exit_code == 0, run.output
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["config"]["lr"] == chosen["lr"] and saved["config"]["steps"] == chosen["steps"]
    assert saved["health"]["verdict"]


def test_a_rerun_continues_the_study_and_other_settings_are_refused(workspace, tmp_path):
    out = tmp_path / "study"
    assert CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2")).exit_code == 0
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "4"))
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    # The continuing process draws its own settings: with the study's seed it repeated trial 1's.
    assert trials[2]["params"] != trials[1]["params"]
    # The same total again runs nothing new.
    assert CliRunner().invoke(main, tune_args(workspace, out, "--trials", "4")).exit_code == 0
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 4
    changed = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "5", "--batch-size", "4"))
    assert changed.exit_code != 0 and "other settings" in changed.output and "batch_size" in changed.output


def test_two_processes_share_one_sqlite_study(workspace, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"), OMP_NUM_THREADS="1")
    workers = [subprocess.Popen([sys.executable, "-m", "rmu", "tune",
                                 *cli_args(workspace, tmp_path / f"worker{i}", "--trials", "4", "--storage", storage,
                                           "--no-pruning")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    lists = [json.loads((tmp_path / f"worker{i}" / "trials.json").read_text())["trials"] for i in range(2)]
    finished = [t for t in max(lists, key=len) if t["state"] == "COMPLETE"]
    # One study: --trials is the total of both processes (8 if each had counted its own; at most
    # one more than 4 when both start a trial at once), with unique numbers.
    assert 4 <= len(finished) <= 5
    assert len({t["number"] for t in finished}) == len(finished)
    # Every trial was run by one of the two processes (which of them ran how many is up to timing).
    pids = {str(w.pid) for w in workers}
    assert {t["worker"].rsplit(":", 1)[1] for t in finished} <= pids
    # ... each from its own random stream: no two trials of the study draw the same settings.
    drawn = [json.dumps(t["params"], sort_keys=True) for t in finished]
    assert len(set(drawn)) == len(drawn)


def test_holdout_reports_the_other_half(workspace, tmp_path):
    tune_half, held_out = split_halves(load_task(workspace / "forget_q.jsonl"))
    assert len(tune_half) == 3 and len(held_out) == 3
    assert set(tune_half.questions).isdisjoint(held_out.questions)
    summary = tune({"model": str(workspace / "model"), "forget": {"f": str(workspace / "forget.jsonl")},
                    "retain": [str(workspace / "retain.txt")], "layer": 2, "steps": 4, "batch_size": 2, "min_len": 0,
                    "max_len": 32, "retain_max_len": 32, "device": "cpu"}, tmp_path / "h",
                   forget_tasks=[workspace / "forget_q.jsonl"], retain_tasks=[workspace / "retain_q.jsonl"],
                   settings=TuneSettings(trials=1, holdout=True, scoring="completion", layers=(2,)), progress=False)
    assert "forget_accuracy" in summary["seeds"]["holdout"] and "holdout_baseline" in summary["seeds"]


def test_bad_input_fails_early(workspace, tmp_path):
    with pytest.raises(TuneError, match="outside the model"):
        tune({"model": str(workspace / "model"), "forget": {"f": str(workspace / "forget.jsonl")},
              "retain": [str(workspace / "retain.txt")], "min_len": 0, "device": "cpu"}, tmp_path / "x",
             forget_tasks=[workspace / "forget_q.jsonl"], retain_tasks=[workspace / "retain_q.jsonl"],
             settings=TuneSettings(trials=1, layers=(9,)), progress=False)


def test_the_keyword_objective_counts_only_the_drop_beyond_the_base_models():
    from rmu.tune import objective_value

    base = {"forget_accuracy": 0.8, "retain_accuracy": 0.9, "retain_keyword_accuracy": 0.85}  # base drop 0.05
    robust = {"forget_accuracy": 0.25, "retain_accuracy": 0.9, "retain_keyword_accuracy": 0.85}
    wrecked = {"forget_accuracy": 0.25, "retain_accuracy": 0.9, "retain_keyword_accuracy": 0.25}
    assert objective_value(robust, base, 0.25, keyword_weight=2.0) == pytest.approx(0.0)
    assert objective_value(wrecked, base, 0.25, keyword_weight=2.0) == pytest.approx(2.0 * (0.65 - 0.05))
    assert objective_value(wrecked, base, 0.25) == pytest.approx(0.0)  # weight 0: as before


def test_keyword_tasks_put_a_keyword_sentence_before_each_retain_question(workspace):
    from rmu.attacks.keywords import HELD_OUT_TEMPLATES
    from rmu.tune import keyword_tasks, study_keywords

    base = {"model": str(workspace / "model"), "forget": {"f": str(workspace / "forget.jsonl")},
            "retain": [str(workspace / "retain.txt")], "min_len": 0}
    keywords = study_keywords(base, TuneSettings(keyword_weight=1.0))
    assert "Iron" in keywords and "Paris" not in keywords  # found in the forget corpus, not the retain one
    retain = load_task(workspace / "retain_q.jsonl")
    tasks = keyword_tasks([retain], keywords)
    assert len(tasks) == len(HELD_OUT_TEMPLATES) and len({t.name for t in tasks}) == len(tasks)
    for task, template in zip(tasks, HELD_OUT_TEMPLATES):
        prefix = template.split("{keyword}")[0]
        for plain, changed in zip(retain.questions, task.questions):
            assert changed.question.endswith(plain.question) and changed.question.startswith(prefix)
            assert changed.choices == plain.choices and changed.answer == plain.answer


def test_a_study_with_a_keyword_weight_tries_keyword_robust_and_scores_the_keyword_drop(workspace, tmp_path):
    out = tmp_path / "study"
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2", "--keyword-weight", "1",
                                                "--no-pruning"))
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "trials.json").read_text())
    assert "retain_keyword_accuracy" in trials["baseline"]
    # The first two trials: the scale rule without and with --keyword-robust.
    assert [t["params"]["keyword_robust"] for t in trials["trials"]] == [False, True]
    assert [bool(t["settings"].get("keyword_robust")) for t in trials["trials"]] == [False, True]
    for trial in trials["trials"]:
        assert set(trial["scores"]) == {"forget_accuracy", "forget_probability", "retain_accuracy",
                                        "retain_keyword_accuracy"}
    best = yaml.safe_load((out / "best.yaml").read_text())
    chosen = json.loads((out / "summary.json").read_text())["best"]
    assert bool(best.get("keyword_robust")) == bool(chosen["params"]["keyword_robust"])
    report = CliRunner().invoke(main, ["report", str(out), "--output", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "retain acc, keyword" in (tmp_path / "report" / "report.md").read_text()


def test_keyword_templates_reach_the_scoring_and_the_summary(workspace, tmp_path, monkeypatch):
    import rmu.tune

    scored = []
    evaluate = rmu.tune.evaluate

    def recording(model, tokenizer, tasks, **options):
        scored.extend(q.question for task in tasks for q in task.questions)
        return evaluate(model, tokenizer, tasks, **options)

    monkeypatch.setattr(rmu.tune, "evaluate", recording)
    out = tmp_path / "study"
    templates = ["{keyword} is a chemical element.", "Consider {keyword} first."]
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "1", "--keyword-weight", "1",
                                                "--no-pruning", *(a for t in templates for a in ("--keyword-template", t))))
    assert result.exit_code == 0, result.output
    plain = [q.question for q in load_task(workspace / "retain_q.jsonl").questions]
    for template in templates:
        head, tail = template.split("{keyword}")
        with_template = [q for q in scored if q.startswith(head) and tail + " " in q and q not in plain]
        assert len(with_template) >= len(plain)  # every retain question, at least in the baseline
    assert not any(q.startswith("I was reading about") for q in scored)  # the default templates are replaced
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["keyword_templates"] == templates


@pytest.mark.parametrize("extra, message", [
    (["--keyword-weight", "1", "--keyword-template", "Iron is an element."], "--keyword-template 'Iron is"),
    (["--keyword-weight", "1", "--keyword-template", "{keyword} and {other}."], "no other"),
    (["--keyword-template", "{keyword} is an element."], "add --keyword-weight"),
])
def test_a_bad_keyword_template_is_refused_before_the_model_loads(workspace, tmp_path, monkeypatch, extra, message):
    import rmu.tune

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(rmu.tune, "load_full_model", no_loading)
    result = CliRunner().invoke(main, tune_args(workspace, tmp_path / "study", "--trials", "1", *extra))
    assert result.exit_code != 0 and message in result.output, result.output
    assert "the model was loaded" not in result.output and "Traceback" not in result.output


def test_a_trial_is_stopped_half_way_only_when_its_retain_accuracy_is_already_hopeless():
    from rmu.tune import hopeless

    base = {"forget_accuracy": 0.9, "retain_accuracy": 0.85}
    settings = TuneSettings(max_retain_drop=0.05)
    assert not hopeless({"forget_accuracy": 0.9, "retain_accuracy": 0.80}, base, settings)  # forgetting may come late
    assert not hopeless({"forget_accuracy": 0.9, "retain_accuracy": 0.76}, base, settings)  # within 2 drops
    assert hopeless({"forget_accuracy": 0.25, "retain_accuracy": 0.74}, base, settings)


def test_a_study_continues_from_another_folder_and_refuses_changed_corpora(workspace, tmp_path, monkeypatch):
    """Inputs count by content: relative paths from another working folder are the same study."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(workspace, data)
    out = tmp_path / "study"
    assert CliRunner().invoke(main, tune_args(data, out, "--trials", "1")).exit_code == 0
    monkeypatch.chdir(tmp_path)
    relative = CliRunner().invoke(main, tune_args(Path("data"), Path("study"), "--trials", "2"))
    assert relative.exit_code == 0, relative.output
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 2
    (data / "forget.jsonl").write_text((data / "forget.jsonl").read_text() + '{"text": "One more line."}\n')
    changed = CliRunner().invoke(main, tune_args(Path("data"), Path("study"), "--trials", "3"))
    assert changed.exit_code != 0 and "forget corpus 'f' (its contents)" in changed.output


def test_a_study_started_before_inputs_counted_by_content_continues(workspace, tmp_path, monkeypatch):
    from rmu import tune as tune_module

    out = tmp_path / "study"
    with monkeypatch.context() as old_rmu:  # the study as an older rmu recorded it: paths as spelled
        old_rmu.setattr(tune_module, "_fingerprint", tune_module._legacy_fingerprint)
        assert CliRunner().invoke(main, tune_args(workspace, out, "--trials", "1")).exit_code == 0
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2"))
    assert result.exit_code == 0, result.output
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 2
    changed = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "3", "--batch-size", "4"))
    assert changed.exit_code != 0 and "batch_size" in changed.output


def test_a_study_begun_before_the_real_steps_lr_continues_only_with_the_one_step_rule(workspace, tmp_path):
    """Its trials' lrs came from the one-step rule: continuing it under --auto-lr steps (the default
    now) would draw new trials from other lrs, so that is refused, and --auto-lr sign-step continues it."""
    import optuna

    out = tmp_path / "study"
    assert CliRunner().invoke(main, tune_args(workspace, out, "--trials", "1")).exit_code == 0
    study = optuna.load_study(study_name="rmu-tune", storage=f"sqlite:///{out / 'study.db'}")
    saved = study.user_attrs["fingerprint"]
    assert saved["base"]["auto_lr"] == "steps"  # recorded although not given
    study.set_user_attr("fingerprint", {**saved, "base": {k: v for k, v in saved["base"].items() if k != "auto_lr"}})
    refused = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2"))
    assert refused.exit_code != 0 and "auto_lr" in refused.output
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2", "--auto-lr", "sign-step"))
    assert result.exit_code == 0, result.output


def test_a_study_begun_before_a_new_option_continues_while_that_option_is_set_as_before(workspace, tmp_path):
    """An option added since a study began (here --loss-dims), set as rmu behaved before it, is the same study."""
    import optuna

    out = tmp_path / "study"
    assert CliRunner().invoke(main, tune_args(workspace, out, "--trials", "1")).exit_code == 0
    study = optuna.load_study(study_name="rmu-tune", storage=f"sqlite:///{out / 'study.db'}")
    saved = study.user_attrs["fingerprint"]
    study.set_user_attr("fingerprint", {**saved, "base": {k: v for k, v in saved["base"].items() if k != "loss_dims"}})
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2"))
    assert result.exit_code == 0, result.output
    changed = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "3", "--loss-dims", "informative"))
    assert changed.exit_code != 0 and "loss_dims" in changed.output


def test_the_pareto_plot_draws_the_floor_chance_base_and_the_best_trial():
    from rmu.tune import plot_pareto

    trials = [{"number": 0, "scores": {"forget_accuracy": 0.5, "retain_accuracy": 0.9}, "constraints": [-0.01]},
              {"number": 1, "scores": {"forget_accuracy": 0.3, "retain_accuracy": 0.7}, "constraints": [0.15]},
              {"number": 2, "scores": {"forget_accuracy": 0.27, "retain_accuracy": 0.88}, "constraints": [-0.03]},
              {"number": 3, "state": "PRUNED"}]
    figure = plot_pareto(trials, {"forget_accuracy": 0.8, "retain_accuracy": 0.9}, 0.25, 0.05, best=2)
    ax = figure.axes[0]
    labels = {text.get_text() for text in ax.get_legend().get_texts()}
    assert labels == {"feasible", "violates the constraint", "retain floor (base - 0.05)", "chance", "base model",
                      "best (trial 2)"}
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["retain floor (base - 0.05)"].get_ydata()[0] == pytest.approx(0.85)
    assert lines["chance"].get_xdata()[0] == pytest.approx(0.25)
    points = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert points["feasible"] == [[0.5, 0.9], [0.27, 0.88]] and points["violates the constraint"] == [[0.3, 0.7]]
    assert points["best (trial 2)"] == [[0.27, 0.88]] and points["base model"] == [[0.8, 0.9]]
