"""``--keyword-positions``, ``--keyword-window``, ``--keyword-forget-focus`` and ``--keyword-retain-weight``
(issue #12, the animals topic)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import straight_and_resumed
from rmu import engine
from rmu.config import ConfigError, make_config
from rmu.data import prepare_tokenizer, tokenize
from rmu.engine import unlearn
from rmu.fingerprint import differences, run_fingerprint
from rmu.losses import loss_mask
from rmu.keywords import KEYWORDS_FILE, POSITIONS, augment_with_spans, forget_focus_spans, insert_sentence_at
from rmu.testing import save_tiny_model, tiny_model

from test_keywords import FORGET, corpora, two_topic_options  # noqa: F401  (the fixture is used by name)
from test_tune import tune_args, workspace  # noqa: F401  (the fixture is used by name)

DOCUMENTS = [f"Paris is the capital of France. It lies on the Seine. Fact {i}." for i in range(200)]
KEYWORDS = ["Iron", "Neon", "argon"]


@pytest.fixture(scope="module")
def tokenizer():
    return copy.deepcopy(prepare_tokenizer(tiny_model("llama", seed=0)[1]))


def kept_text(tokenizer, batch, row: int) -> str:
    keep = batch.attention_mask[row].bool() & ~batch.excluded[row]
    return tokenizer.decode(batch.input_ids[row][keep].tolist())


# ---- positions ----------------------------------------------------------------------------------


def test_all_three_positions_draw_as_before_the_setting_existed():
    assert augment_with_spans(DOCUMENTS, KEYWORDS, seed=3) == augment_with_spans(DOCUMENTS, KEYWORDS, seed=3,
                                                                                 positions=POSITIONS)
    assert augment_with_spans(DOCUMENTS, KEYWORDS, seed=3) == augment_with_spans(DOCUMENTS, KEYWORDS, seed=3,
                                                                                 positions=list(POSITIONS))


def test_before_and_inside_never_put_a_sentence_after_the_document():
    pairs = augment_with_spans(DOCUMENTS, KEYWORDS, seed=3, fraction=1.0, positions=("before", "inside"))
    starts = {"before": 0, "inside": 0}
    for document, (text, (start, end)) in zip(DOCUMENTS, pairs):
        assert end < len(text)  # document text always follows the sentence
        starts["before" if start == 0 else "inside"] += 1
        if start:
            assert text[:start - 1] == document[:start - 1] and text[end + 1:] == document[start:]
    assert min(starts.values()) > 60  # both positions drawn (200 documents)
    only_before = augment_with_spans(DOCUMENTS, KEYWORDS, seed=3, fraction=1.0, positions=("before",))
    assert all(span[0] == 0 and text.endswith(document) for document, (text, span) in zip(DOCUMENTS, only_before))


# ---- window --------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_window_keeps_the_text_before_and_that_many_tokens_after_the_sentence(tokenizer, side):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = side
    document = "Paris is big. Rome is old and has many churches and a river."
    sentence = "Iron is gas."
    text, start = insert_sentence_at(document, sentence, "inside")
    span = (start, start + len(sentence))
    whole = tokenize(tokenizer, [text, "Short one."], 64, [span, None])
    windowed = tokenize(tokenizer, [text, "Short one."], 64, [span, None], window=3)
    assert torch.equal(whole.input_ids, windowed.input_ids)
    real = whole.attention_mask[0].bool()
    last = int(whole.excluded[0].nonzero().max())  # the sentence's last token
    beyond = torch.zeros_like(real)
    beyond[last + 4:] = True
    assert torch.equal(windowed.excluded[0], whole.excluded[0] | (beyond & real))
    assert int((real & ~whole.excluded[0])[last + 1:].sum()) > 3  # the whole rest would be longer
    assert int((real & ~windowed.excluded[0])[last + 1:].sum()) == 3
    assert kept_text(tokenizer, windowed, 0).startswith("Paris is big.")  # the text before the sentence stays
    assert not windowed.excluded[1].any()  # rows without a sentence keep every token


# ---- forget focus ---------------------------------------------------------------------------------


def test_forget_focus_leaves_out_each_sentence_up_to_its_first_keyword():
    document = "A notebook lists animals. The pike is a fish. Nothing here at all. See the heron, a bird."
    spans = forget_focus_spans(document, {"pike", "heron", "bird"})
    assert [document[a:b] for a, b in spans] == ["A notebook lists animals.", "The", "Nothing here at all.",
                                                 "See the"]
    assert forget_focus_spans("No topic word. None at all.", {"pike"}) == []  # steered whole
    assert forget_focus_spans("Pike first.", {"pike"}) == []  # nothing before the keyword: nothing left out


def test_forget_focus_marks_the_forget_batches_and_leaves_retain_alone(corpora, tokenizer):  # noqa: F811
    config = make_config(two_topic_options(corpora, keyword_robust=True, keyword_forget_focus=True,
                                           keyword_mask=False))
    read = engine._read_corpora(config)
    plain = engine._read_corpora(config.model_copy(update={"keyword_forget_focus": False}))
    assert read.forget == plain.forget and read.retain == plain.retain and plain.forget_excluded is None
    assert read.keywords["forget_focus"] is True
    batches = engine._tokenize_needed(read, tokenizer, config, 4)
    for forget, retain in (pair for topic in batches for pair in topic):
        assert retain.excluded is None and forget.excluded.any()
        for row in range(forget.input_ids.shape[0]):
            kept = kept_text(tokenizer, forget, row)
            assert any(word in kept for word in ("pathogen", "exploit"))  # the keyword and what follows stay
            assert not kept.strip().startswith("The")  # the sentence's start before the keyword is left out


# ---- retain weight --------------------------------------------------------------------------------


def test_the_retain_weight_weighs_the_augmented_rows_positions(corpora, tokenizer):  # noqa: F811
    config = make_config(two_topic_options(corpora, keyword_robust=True, keyword_retain_weight=0.25,
                                           keyword_fraction=0.5, mask_padding=True))
    read = engine._read_corpora(config)
    batches = engine._tokenize_needed(read, tokenizer, config, 6)
    seen = set()
    for (forget, retain), spans in zip(batches[0], read.retain_inserted[0]):
        assert forget.row_weights is None
        mask = loss_mask(retain, config)
        for row, span in enumerate(spans):
            weight = 1.0 if span is None else 0.25
            seen.add(weight)
            kept = retain.attention_mask[row].bool() & ~retain.excluded[row]
            assert torch.all(mask[row][kept] == weight) and torch.all(mask[row][~kept] == 0)
    assert seen == {1.0, 0.25}
    unweighted = config.model_copy(update={"keyword_retain_weight": 1.0})
    plain = engine._tokenize_needed(engine._read_corpora(unweighted), tokenizer, unweighted, 6)
    assert all(retain.row_weights is None for _, retain in plain[0])  # weight 1: the batches as before


# ---- the engine, resume, fingerprint, CLI --------------------------------------------------------


def test_each_option_changes_its_own_loss_only(corpora):  # noqa: F811
    model, tokenizer = tiny_model(num_layers=5)

    def records(**extra):
        config = make_config(two_topic_options(corpora, keyword_robust=True, retain_max_len=160,
                                               **({"keyword_fraction": 1.0} | extra)))
        return unlearn(config, model=copy.deepcopy(model), tokenizer=tokenizer, progress=False).records

    today = records()
    assert records(keyword_positions=["before", "after", "inside"], keyword_window=None,
                   keyword_forget_focus=False) == today
    focus = records(keyword_forget_focus=True)
    assert focus[0]["forget_loss"] != today[0]["forget_loss"] and focus[0]["retain_loss"] == today[0]["retain_loss"]
    for extra in (dict(keyword_positions=["before", "inside"]), dict(keyword_window=2)):
        other = records(**extra)
        assert other[0]["forget_loss"] == today[0]["forget_loss"]
        assert [r["retain_loss"] for r in other] != [r["retain_loss"] for r in today], extra
    # every document augmented: one weight for all rows is the same mean; half of them: the retain loss changes
    assert records(keyword_retain_weight=0.5) == today
    half = records(keyword_fraction=0.5)
    weighted = records(keyword_fraction=0.5, keyword_retain_weight=0.5)
    assert weighted[0]["forget_loss"] == half[0]["forget_loss"]
    assert [r["retain_loss"] for r in weighted] != [r["retain_loss"] for r in half]


def test_resume_with_the_options_gives_the_uninterrupted_run(corpora, tmp_path):  # noqa: F811
    folder = save_tiny_model(tmp_path / "model", num_layers=5)
    options = two_topic_options(corpora, model=str(folder), keyword_robust=True, method="adaptive", beta=2.0,
                                mask_padding=True, keyword_positions=["before", "inside"], keyword_window=3,
                                keyword_forget_focus=True, keyword_retain_weight=0.5)
    straight, resumed = straight_and_resumed(options, tmp_path, stop_at_step=3)
    assert [r["retain_loss"] for r in resumed.records] == [r["retain_loss"] for r in straight.records]
    assert [r["forget_loss"] for r in resumed.records] == [r["forget_loss"] for r in straight.records]
    a, b = (load_file(str(tmp_path / x / "model.safetensors")) for x in "ab")
    for name in straight.trained_parameters:
        assert torch.equal(a[name], b[name])


def test_a_state_saved_before_the_options_resumes_while_they_are_set_as_before(tmp_path):
    corpus = tmp_path / "a.jsonl"
    corpus.write_text('{"text": "x"}\n')
    base = {"model": "some/hub-id", "forget": {"bio": str(corpus)}, "retain": [str(corpus)], "keyword_robust": True}
    new = ("keyword_positions", "keyword_window", "keyword_forget_focus", "keyword_retain_weight")
    older = run_fingerprint(make_config(base))
    for key in new:
        older["options"].pop(key)
    assert differences(older, run_fingerprint(make_config(base))) == []
    changed = run_fingerprint(make_config(base | {"keyword_positions": "before,inside", "keyword_window": 4,
                                                  "keyword_forget_focus": True}))
    assert differences(older, changed) == ["--keyword-forget-focus was None, now True",
                                           "--keyword-positions was None, now ['before', 'inside']",
                                           "--keyword-window was None, now 4"]
    saved = json.loads(json.dumps(changed))  # as written to disk: lists stay lists
    assert differences(saved, changed) == []
    plain = run_fingerprint(make_config(base | {"keyword_robust": False}))["options"]
    assert not set(new) & set(plain)  # no part of a run that inserts no sentence


def test_bad_values_are_refused(corpora):  # noqa: F811
    for extra, message in ((dict(keyword_positions="before,before"), "at most once"),
                           (dict(keyword_positions=[]), "at least one"),
                           (dict(keyword_positions="before,middle"), "'before', 'after' or 'inside'"),
                           (dict(keyword_window=0), "--keyword-window 0"),
                           (dict(keyword_window=4, keyword_mask=False), "with --keyword-mask"),
                           (dict(keyword_forget_focus=True, slow_tokenizer=True), "fast tokenizer"),
                           (dict(keyword_retain_weight=0), "--keyword-retain-weight 0"),
                           (dict(keyword_retain_weight=0.5, keyword_mask=False), "with --keyword-mask")):
        with pytest.raises(ConfigError, match=message):
            make_config(two_topic_options(corpora, keyword_robust=True, **extra))


def test_cli_options_reach_the_run(tmp_path, corpora):  # noqa: F811
    from click.testing import CliRunner

    from rmu.cli import main

    forget, retain = corpora
    model = save_tiny_model(tmp_path / "model", num_layers=5)
    output = tmp_path / "run"
    arguments = ["unlearn", "--model", str(model), "--forget", f"bio={forget['bio']}", "--retain", retain, "--layer",
                 "3", "--steps", "2", "--batch-size", "3", "--min-len", "0", "--keyword-robust", "--quiet",
                 "--keyword-positions", "before,inside", "--keyword-window", "4", "--keyword-forget-focus",
                 "--keyword-retain-weight", "0.5",
                 "--output", str(output)]
    result = CliRunner().invoke(main, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((output / "run.json").read_text())["config"]
    assert (config["keyword_positions"], config["keyword_window"], config["keyword_forget_focus"],
            config["keyword_retain_weight"]) == (["before", "inside"], 4, True, 0.5)
    saved = json.loads((output / KEYWORDS_FILE).read_text())
    assert (saved["positions"], saved["window"], saved["forget_focus"], saved["retain_weight"]) == (
        ["before", "inside"], 4, True, 0.5)
    bad = CliRunner().invoke(main, [*arguments[:-2], "--keyword-positions", "over", "--output", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "keyword" in bad.output


def test_forget_corpora_of_the_fixture_name_their_keywords():
    assert all("pathogen" in d for d in FORGET["bio"]) and all("exploit" in d for d in FORGET["cyber"])


def test_a_tune_study_runs_its_keyword_robust_trials_with_the_settings_of_its_config(workspace, tmp_path):  # noqa: F811
    import yaml
    from click.testing import CliRunner

    from rmu.cli import main

    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({"keyword_positions": ["before", "inside"], "keyword_forget_focus": True}))
    out = tmp_path / "study"
    result = CliRunner().invoke(main, tune_args(workspace, out, "--trials", "2", "--keyword-weight", "1",
                                                "--no-pruning", "--config", str(config)))
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "trials.json").read_text())
    assert [t["params"]["keyword_robust"] for t in trials["trials"]] == [False, True]
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["keyword_positions"] == ["before", "inside"] and best["keyword_forget_focus"] is True
