"""rmu tune's search ranges (--lr-range, --alpha-range, --coeff-range) and the warning when the best sits at an edge."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rmu.cli import main
from rmu.tune import TuneError, TuneSettings, TuneStudy, tune
from rmu.tune_ranges import EDGE_FRACTION, edge_lines, edge_of, parse_range, range_edges
from test_tune import tune_args, workspace  # noqa: F401  (the module's fixture)

DEFAULTS = {"lr_range": (0.2, 10.0), "alpha_range": (0.1, 10.0), "coeff_range": (1.0, 8.0)}


def test_edge_of_is_a_fraction_of_the_range_on_the_log_scale():
    # 0.1-10 is two decades: the edges are the bottom and top 0.2 decade (x1.58)
    assert edge_of(0.1, 0.1, 10) == "low" and edge_of(0.1 * 10 ** (2 * EDGE_FRACTION) * 0.99, 0.1, 10) == "low"
    assert edge_of(0.1 * 10 ** (2 * EDGE_FRACTION) * 1.01, 0.1, 10) is None
    assert edge_of(1.0, 0.1, 10) is None
    assert edge_of(6.5, 0.1, 10) == "high" and edge_of(10, 0.1, 10) == "high"


def test_range_edges_names_the_option_that_widens_the_range():
    params = {"lr_factor": 1.0, "alpha_factor": 0.11, "coeff_ratio": 7.9, "steps": 40}
    edges = range_edges(params, DEFAULTS, max_steps=75, steps_cap=75)
    assert edges == [
        {"parameter": "alpha_factor", "edge": "low", "value": 0.11, "range": [0.1, 10.0],
         "advice": "--alpha-range 0.01,1 (one decade lower)"},
        {"parameter": "coeff_ratio", "edge": "high", "value": 7.9, "range": [1.0, 8.0],
         "advice": "--coeff-range 10,80 (one decade higher)"}]
    lines = edge_lines(edges)
    assert "alpha_factor 0.11 sits at the bottom of its range 0.1-10" in lines[0]
    assert "--alpha-range 0.01,1" in lines[0]


def test_a_best_in_the_middle_of_every_range_gives_no_warning():
    params = {"lr_factor": 1.0, "alpha_factor": 1.0, "coeff_ratio": 2.0, "steps": 40, "noise_ratio": 0.5}
    assert range_edges(params, DEFAULTS, max_steps=75, steps_cap=75) == []


def test_steps_at_the_top_advise_a_longer_run_up_to_one_pass_over_the_corpus():
    middle = {"lr_factor": 1.0, "alpha_factor": 1.0, "coeff_ratio": 2.0}
    [longer] = range_edges({**middle, "steps": 75}, DEFAULTS, max_steps=75, steps_cap=300)
    assert longer["edge"] == "high" and longer["advice"].startswith("--steps 150 (at most 300")
    [capped] = range_edges({**middle, "steps": 75}, DEFAULTS, max_steps=75, steps_cap=75)
    assert capped["hard_limit"] and "one pass over the forget corpus" in capped["advice"]
    assert "no wider range is possible" in edge_lines([capped])[0]
    [shorter] = range_edges({**middle, "steps": 19}, DEFAULTS, max_steps=75, steps_cap=75)
    assert shorter["edge"] == "low" and shorter["advice"].startswith("--steps 37")
    # a bottom of one step cannot go lower: not reported
    assert range_edges({**middle, "steps": 1}, DEFAULTS, max_steps=4, steps_cap=8) == []


@pytest.mark.parametrize("text", ["0,1", "-1,1", "1,0.5", "1,1", "a,b", "1", "1,2,3", "inf,1"])
def test_a_bad_range_is_refused_naming_the_option(text):
    with pytest.raises(ValueError, match="--alpha-range"):
        parse_range(text, "--alpha-range")
    assert parse_range("0.01, 1", "--alpha-range") == (0.01, 1.0)


def test_the_cli_and_the_library_refuse_a_bad_range_before_the_model_loads(workspace, tmp_path):
    result = CliRunner().invoke(main, tune_args(workspace, tmp_path / "s", "--lr-range", "10,1"))
    assert result.exit_code != 0 and "--lr-range" in result.output and "LOW must be below HIGH" in result.output
    with pytest.raises(TuneError, match="--coeff-range"):
        tune({"model": str(tmp_path / "no model")}, tmp_path / "t", forget_tasks=[workspace / "forget_q.jsonl"],
             retain_tasks=[workspace / "retain_q.jsonl"], settings=TuneSettings(coeff_range=(0.0, 2.0)), progress=False)


def test_a_study_whose_ranges_exclude_the_rule_starts_from_it_brought_into_them_and_warns_at_the_edge(workspace,
                                                                                                   tmp_path):
    out = tmp_path / "study"
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "1", "--no-pruning",
                                                "--lr-range", "2,10", "--coeff-range", "3,8"))
    assert result.exit_code == 0, result.output
    [first] = json.loads((out / "trials.json").read_text())["trials"]
    assert first["params"]["lr_factor"] == 2.0 and first["params"]["coeff_ratio"] == 3.0
    assert first["params"]["alpha_factor"] == 1.0
    assert "lr_factor 1 -> 2 (--lr-range)" in first["note"] and "coeff_ratio 2 -> 3 (--coeff-range)" in first["note"]
    summary = json.loads((out / "summary.json").read_text())
    edges = {e["parameter"]: e for e in summary["range_edges"]}
    # the only trial is the best: lr and coeff at the bottom of their ranges, steps (4) at the top, alpha in the middle
    assert set(edges) == {"lr_factor", "coeff_ratio", "steps"}
    assert edges["lr_factor"]["advice"] == "--lr-range 0.2,1 (one decade lower)"
    assert edges["steps"]["edge"] == "high" and edges["steps"]["advice"].startswith("--steps 8 (at most 8")
    assert "sits at the bottom of its range 2-10" in result.output and "--lr-range 0.2,1" in result.output
    assert any("--lr-range 0.2,1" in line for line in TuneStudy().notes(summary))  # the report shows it


def test_a_study_begun_before_the_ranges_continues_at_the_defaults_and_refuses_another_range(workspace, tmp_path):
    import optuna

    out = tmp_path / "study"
    assert CliRunner().invoke(main, tune_args(workspace, out, "--trials", "1")).exit_code == 0
    study = optuna.load_study(study_name="rmu-tune", storage=f"sqlite:///{out / 'study.db'}")
    saved = study.user_attrs["fingerprint"]
    # the fingerprint of a study begun before the ranges existed: no range fields
    older = {**saved, "settings": {k: v for k, v in saved["settings"].items() if not k.endswith("_range")}}
    assert older == saved  # at their defaults the ranges are left out, as older studies recorded them
    study.set_user_attr("fingerprint", older)
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2", "--alpha-range", "0.1,10"))
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "3", "--alpha-range", "0.01,1"))
    assert refused.exit_code != 0 and "other settings" in refused.output
    assert "alpha_range (was the default, now [0.01, 1.0])" in refused.output


def test_a_study_with_a_range_continues_with_it_and_refuses_the_default(workspace, tmp_path):
    out = tmp_path / "study"
    assert CliRunner().invoke(main, tune_args(workspace, out, "--trials", "1", "--lr-range", "1,30")).exit_code == 0
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2", "--lr-range", "1,30"))
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "3"))
    assert refused.exit_code != 0 and "lr_range (was [1.0, 30.0], now the default)" in refused.output
