"""rmu tune --select-top: the N best trials rerun on K seeds, the one that holds across them chosen on
the tuning half, reruns kept in the study (issue #11)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest
import yaml
from click.testing import CliRunner

from rmu.cli import main
from rmu.config import make_config
from rmu.engine import corpus_steps
from rmu.tune import (HOLDOUT_NOT_USED, RULE_EVERY_SEED, RULE_LEAST_VIOLATING, RULE_ON_MEAN, TuneSettings, _choose,
                      tune)
from rmu.tune_ranges import range_edges
from test_tune import tune_args, workspace  # noqa: F401 (the tiny workspace fixture)

BASE = {"forget_accuracy": 0.8, "retain_accuracy": 0.9}
# Forget accuracy on the tuning half by (the study's n-th distinct setting, seed); retain stays at base.
# The study's own seed (42) ranks setting 1 first (|0.26 - 0.25| = 0.01); on the mean of seeds 42 and
# 43 setting 0 is better (0.05 against 0.18).
TUNING = {0: {42: 0.30, 43: 0.30, 44: 0.30}, 1: {42: 0.26, 43: 0.60, 44: 0.60}, 2: {42: 0.50, 43: 0.50, 44: 0.50},
          3: {42: 0.25, 43: 0.25, 44: 0.25}}  # setting 3: a later trial that beats them all
# The held-out half says the opposite: a choice that read it would keep setting 1.
HELD_OUT = {0: 0.90, 1: 0.25, 2: 0.90, 3: 0.90}


@pytest.fixture
def scripted(monkeypatch):
    """``unlearn`` only records its configuration; the scorer answers from TUNING and HELD_OUT by the
    run's setting (numbered in the order first seen) and seed. Counts the unlearn calls."""
    import rmu.tune

    state = {"config": None, "unlearn_calls": 0, "settings": {}}
    restore = rmu.tune._Tuner.restore

    def fake_unlearn(config, **options):
        state["config"], state["unlearn_calls"] = config, state["unlearn_calls"] + 1
        return SimpleNamespace(health=None)

    def fake_restore(self):
        state["config"] = None
        restore(self)

    def fake_scores(self, with_perplexity=True):
        config = state["config"]
        if config is None:
            return dict(BASE)
        number = state["settings"].setdefault(json.dumps([config.lr, config.alpha, config.noise, config.steps]),
                                              len(state["settings"]))
        held_out = self.forget[0].name.endswith("_holdout")
        forget = HELD_OUT[number] if held_out else TUNING[number][config.seed]
        return {"forget_accuracy": forget, "retain_accuracy": BASE["retain_accuracy"]}

    monkeypatch.setattr(rmu.tune, "unlearn", fake_unlearn)
    monkeypatch.setattr(rmu.tune._Tuner, "restore", fake_restore)
    monkeypatch.setattr(rmu.tune._Scorer, "__call__", fake_scores)
    return state


def run_study(workspace, output, general_text=None, **settings):
    return tune({"model": str(workspace / "model"), "forget": {"f": str(workspace / "forget.jsonl")},
                 "retain": [str(workspace / "retain.txt")], "layer": 2, "steps": 4, "batch_size": 2, "min_len": 0,
                 "max_len": 32, "retain_max_len": 32, "device": "cpu"}, output,
                forget_tasks=[workspace / "forget_q.jsonl"], retain_tasks=[workspace / "retain_q.jsonl"],
                general_text=general_text, settings=TuneSettings(**{"trials": 3, "scoring": "completion", "layers": (2,), "prune": False,
                                         **settings}), progress=False)


def test_the_default_is_the_single_seed_best_as_before(workspace, scripted, tmp_path):
    summary = run_study(workspace, tmp_path / "s", seeds=2)
    assert summary["best"]["number"] == 1 and "selection" not in summary
    assert [r["forget_accuracy"] for r in summary["seeds"]["runs"]] == [0.26, 0.60]
    assert scripted["unlearn_calls"] == 3 + 2  # three trials, then the best on both seeds, as before
    study = optuna.load_study(study_name="rmu-tune", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert not [k for k in study.user_attrs if k.startswith("rerun")]
    assert "Chosen among" not in (tmp_path / "s" / "best.yaml").read_text()


def test_two_trials_on_two_seeds_choose_by_the_tuning_half_mean_not_the_held_out_half(workspace, scripted, tmp_path):
    summary = run_study(workspace, tmp_path / "s", seeds=2, select_top=2, holdout=True)
    selection = summary["selection"]
    assert selection["single_seed_best"] == 1 and [c["trial"] for c in selection["candidates"]] == [1, 0]
    assert selection["chosen"] == 0 and summary["best"]["number"] == 0 and selection["rule"] == RULE_EVERY_SEED
    assert selection["scored_on"] == "the tuning half"
    one, zero = selection["candidates"]
    assert [r["forget_accuracy"] for r in one["runs"]] == [0.26, 0.60]
    assert one["objective"]["mean"] == pytest.approx(0.18) and zero["objective"]["mean"] == pytest.approx(0.05)
    # The held-out scores, which favour trial 1, are recorded for every candidate, marked as unused.
    assert [r["forget_accuracy"] for r in one[HOLDOUT_NOT_USED]["runs"]] == [0.25, 0.25]
    assert zero[HOLDOUT_NOT_USED]["forget_accuracy"]["mean"] == pytest.approx(0.90)
    # With --holdout every seed runs (the held-out half needs the model unlearned): 2 x 2 runs.
    assert selection["runs"] == {"run": 4, "study": 0, "trial": 0} and scripted["unlearn_calls"] == 3 + 4
    # "seeds" is the chosen trial's reruns in the format of a plain --seeds rerun.
    seeds = summary["seeds"]
    assert [r["seed"] for r in seeds["runs"]] == [42, 43] and seeds["forget_accuracy"]["mean"] == pytest.approx(0.30)
    assert seeds["holdout"]["forget_accuracy"]["mean"] == pytest.approx(0.90) and "holdout_baseline" in seeds
    best = yaml.safe_load((tmp_path / "s" / "best.yaml").read_text())
    assert best["lr"] == summary["best"]["settings"]["lr"]
    assert "# Chosen among the 2 best trials rerun on 2 seeds (42, 43)" in (tmp_path / "s" / "best.yaml").read_text()
    # The edge warning reads the chosen trial, as it reads the single-seed best without --select-top.
    base = summary["settings"]["base"]
    ranges = {field: getattr(TuneSettings, field) for field in ("lr_range", "alpha_range", "coeff_range")}
    assert summary["range_edges"] == range_edges(summary["best"]["params"], ranges, base["steps"],
                                                 corpus_steps(make_config(base)))


def test_reruns_are_kept_in_the_study_and_only_new_seeds_run(workspace, scripted, tmp_path):
    first = run_study(workspace, tmp_path / "s", seeds=2, select_top=2)
    # Without --holdout the first seed is each trial's own run: one rerun per candidate.
    assert first["selection"]["runs"] == {"run": 2, "study": 0, "trial": 2} and scripted["unlearn_calls"] == 3 + 2
    again = run_study(workspace, tmp_path / "s", seeds=2, select_top=2)
    assert again["selection"]["runs"] == {"run": 0, "study": 2, "trial": 2} and scripted["unlearn_calls"] == 5
    assert again["selection"]["candidates"] == [
        {**c, "runs": [dict(r, source="study" if r["source"] == "run" else r["source"]) for r in c["runs"]]}
        for c in first["selection"]["candidates"]]
    more = run_study(workspace, tmp_path / "s", seeds=3, select_top=2)
    assert more["selection"]["runs"] == {"run": 2, "study": 2, "trial": 2} and scripted["unlearn_calls"] == 7
    assert more["selection"]["chosen"] == 0 and [r["seed"] for r in more["seeds"]["runs"]] == [42, 43, 44]
    # A new trial that becomes a candidate: only its own (trial, seed) pairs run. (Enqueued with its own
    # settings: a continued study's seeded sampler may draw an earlier trial's again.)
    study = optuna.load_study(study_name="rmu-tune", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    study.enqueue_trial({**study.trials[0].params, "lr_factor": 0.5})
    later = run_study(workspace, tmp_path / "s", trials=4, seeds=3, select_top=2)
    assert [c["trial"] for c in later["selection"]["candidates"]] == [3, 1] and later["selection"]["chosen"] == 3
    assert later["selection"]["runs"] == {"run": 2, "study": 2, "trial": 2} and scripted["unlearn_calls"] == 7 + 1 + 2
    # Scores that another general text would change are not reused.
    other = run_study(workspace, tmp_path / "s", general_text=["Some other text."], trials=4, seeds=3, select_top=2)
    assert other["selection"]["runs"] == {"run": 4, "study": 0, "trial": 2}


def test_a_study_made_without_select_top_continues_with_it_and_no_new_trial(workspace, scripted, tmp_path):
    run_study(workspace, tmp_path / "s")
    assert scripted["unlearn_calls"] == 3 + 1
    summary = run_study(workspace, tmp_path / "s", seeds=2, select_top=3)
    assert summary["trials"]["COMPLETE"] == 3 and scripted["unlearn_calls"] == 4 + 3  # the second seed of each
    assert summary["selection"]["chosen"] == 0 and len(summary["selection"]["candidates"]) == 3


def candidate(trial, objectives, feasible, violation_on_mean=0.0):
    return {"trial": trial, "objective": {"mean": sum(objectives) / len(objectives)},
            "feasible_every_seed": all(feasible), "feasible_on_mean": violation_on_mean <= 0,
            "constraints_on_mean": [violation_on_mean]}


def test_the_choice_rules_in_order():
    steady = candidate(3, [0.2, 0.2], [True, True])
    lucky = candidate(1, [0.0, 0.1], [True, False])
    assert _choose([lucky, steady]) == (steady, RULE_EVERY_SEED)
    # no candidate holds on every seed: the lowest mean objective among those feasible on the mean
    broken = candidate(0, [0.0, 0.02], [True, False], violation_on_mean=0.01)
    other = candidate(2, [0.05, 0.15], [False, True])
    assert _choose([broken, other, lucky]) == (lucky, RULE_ON_MEAN)
    # none feasible on the mean either: the least violating mean, whatever its objective
    worse = candidate(4, [0.3, 0.3], [False, False], violation_on_mean=0.005)
    assert _choose([broken, worse]) == (worse, RULE_LEAST_VIOLATING)


def test_bad_option_combinations_are_refused_before_the_model_loads(workspace, tmp_path, monkeypatch):
    import rmu.tune

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(rmu.tune, "load_full_model", no_loading)
    for extra in (["--select-top", "2"], ["--select-top", "2", "--seeds", "1"]):
        result = CliRunner().invoke(main, tune_args(workspace, tmp_path / "x", "--trials", "1", *extra))
        assert result.exit_code != 0 and "--select-top 2" in result.output and "--seeds K" in result.output
        assert "the model was loaded" not in result.output
    zero = CliRunner().invoke(main, tune_args(workspace, tmp_path / "x", "--trials", "1", "--select-top", "0"))
    assert zero.exit_code != 0 and "--select-top" in zero.output


def test_cli_round_trip_on_a_tiny_model(workspace, tmp_path):
    out = tmp_path / "study"
    args = tune_args(workspace, out, "--trials", "3", "--select-top", "2", "--seeds", "2", "--holdout")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    selection = summary["selection"]
    assert "chosen: trial" in result.output and f"runs: {2 * len(selection['candidates'])} now" in result.output
    assert summary["best"]["number"] == selection["chosen"]
    trials = {t["number"]: t for t in json.loads((out / "trials.json").read_text())["trials"]}
    for c in selection["candidates"]:
        # The first seed runs again for the held-out half; runs are deterministic, so its tuning-half
        # scores are the trial's own.
        first = {k: v for k, v in c["runs"][0].items()
                 if k in ("forget_accuracy", "forget_probability", "retain_accuracy")}
        assert first == trials[c["trial"]]["scores"]
        assert c["settings"] == trials[c["trial"]]["settings"]
    assert yaml.safe_load((out / "best.yaml").read_text())["lr"] == trials[selection["chosen"]]["settings"]["lr"]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and f"0 now, {2 * len(selection['candidates'])} reused" in again.output
    report = CliRunner().invoke(main, ["report", str(out), "--output", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Candidates on seeds 42, 43" in text and "held-out forget (not used)" in text
