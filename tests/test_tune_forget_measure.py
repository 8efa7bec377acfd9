"""rmu tune --forget-measure (issue #11): the objective's forget term on the answer probability."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from rmu.cli import main
from rmu.eval.scoring import answer_probability, predict
from rmu.eval.tasks import Question
from rmu.tune import RETAIN_WEIGHT, objective_value
from test_tune import tune_args, workspace  # noqa: F401  (workspace: test_tune's fixture, used by name)

CHOICES = ("Fe", "Oxygen", "H", "Nitrogen")


@given(st.lists(st.floats(min_value=-60, max_value=0), min_size=4, max_size=4),
       st.sampled_from(["letter", "completion"]))
def test_answer_probabilities_of_a_question_sum_to_one_and_peak_at_the_prediction(loglikelihoods, scoring):
    weights = [answer_probability(Question("q", CHOICES, answer), loglikelihoods, scoring) for answer in range(4)]
    assert math.isclose(sum(weights), 1.0, rel_tol=1e-9)
    predicted = predict(0, loglikelihoods, CHOICES, 0, scoring).predicted
    assert weights[predicted] == max(weights)


def test_no_preference_is_chance_and_the_rule_per_character_is_used():
    # completion decides per character: the same log-likelihood per character is no preference
    per_character = [-1.0 * len(c) for c in CHOICES]
    assert answer_probability(Question("q", CHOICES, 1), per_character, "completion") == pytest.approx(0.25)
    # ... while letter scoring takes the log-likelihoods as they are
    assert answer_probability(Question("q", CHOICES, 1), per_character, "letter") < 0.25


def test_the_objective_reads_the_measure_it_is_given():
    base = {"retain_accuracy": 0.9}
    scores = {"forget_accuracy": 0.25, "forget_probability": 0.40, "retain_accuracy": 0.8}
    retain_term = RETAIN_WEIGHT * 0.1
    assert objective_value(scores, base, 0.25) == pytest.approx(retain_term)  # the default: accuracy, as before
    assert objective_value(scores, base, 0.25, forget_measure="probability") == pytest.approx(0.15 + retain_term)


def test_a_study_on_the_answer_probability_records_both_and_is_a_study_of_its_own(workspace, tmp_path):  # noqa: F811
    import optuna

    out = tmp_path / "study"
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2", "--forget-measure", "probability"))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "trials.json").read_text())
    chance, base = data["chance"], data["baseline"]
    assert 0 < base["forget_probability"] < 1
    complete = [t for t in data["trials"] if t["state"] == "COMPLETE"]
    assert complete
    for trial in complete:
        scores = trial["scores"]
        expected = abs(scores["forget_probability"] - chance) + RETAIN_WEIGHT * max(
            0.0, base["retain_accuracy"] - scores["retain_accuracy"])
        assert trial["value"] == pytest.approx(expected)
    study = optuna.load_study(study_name="rmu-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert study.user_attrs["fingerprint"]["settings"]["forget_measure"] == "probability"
    changed = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "3"))
    assert changed.exit_code != 0 and "forget_measure" in changed.output


def test_an_unknown_measure_is_refused_before_the_model_loads(workspace, tmp_path):  # noqa: F811
    from rmu.tune import TuneError, TuneSettings, tune

    with pytest.raises(TuneError, match="--forget-measure 'prob': choose one of accuracy, probability"):
        tune({"model": str(workspace / "missing-model"), "forget": {"f": str(workspace / "forget.jsonl")},
              "retain": [str(workspace / "retain.txt")]}, tmp_path / "s", forget_tasks=[workspace / "forget_q.jsonl"],
             retain_tasks=[workspace / "retain_q.jsonl"], settings=TuneSettings(forget_measure="prob"), progress=False)


def test_a_study_on_accuracy_keeps_the_fingerprint_of_studies_begun_before_the_option(workspace, tmp_path):  # noqa: F811
    import optuna

    out = tmp_path / "study"
    assert CliRunner().invoke(main, tune_args(workspace, out, "--trials", "1")).exit_code == 0
    study = optuna.load_study(study_name="rmu-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert "forget_measure" not in study.user_attrs["fingerprint"]["settings"]

