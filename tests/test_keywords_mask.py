"""``--keyword-mask``: the retain loss leaves out the tokens of the sentence ``--keyword-robust`` inserts."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import straight_and_resumed
from rmu import engine
from rmu.config import ConfigError, make_config
from rmu.data import DataError, TokenBatch, prepare_tokenizer, tokenize
from rmu.engine import unlearn
from rmu.keywords import KEYWORDS_FILE, POSITIONS, augment_documents, augment_with_spans, insert_sentence_at
from rmu.losses import loss_mask
from rmu.testing import save_tiny_model, tiny_model

from test_keywords import corpora, two_topic_options  # noqa: F401  (the fixture is used by name)

DOCUMENTS = [f"Paris is the capital of France. It lies on the Seine. Fact {i}." for i in range(60)]
KEYWORDS = ["Iron", "Neon", "argon"]


def excluded_text(tokenizer, batch: TokenBatch, row: int) -> str:
    ids = batch.input_ids[row][batch.excluded[row]]
    return tokenizer.decode(ids.tolist())


@pytest.fixture(scope="module")
def tokenizer():
    return copy.deepcopy(prepare_tokenizer(tiny_model("llama", seed=0)[1]))


def test_spans_point_at_the_inserted_sentence_and_the_texts_are_unchanged():
    pairs = augment_with_spans(DOCUMENTS, KEYWORDS, seed=5, fraction=0.5)
    assert [text for text, _ in pairs] == augment_documents(DOCUMENTS, KEYWORDS, seed=5, fraction=0.5)
    for document, (text, span) in zip(DOCUMENTS, pairs):
        if span is None:
            assert text == document
            continue
        start, end = span
        sentence = text[start:end]
        assert text.replace(sentence, "", 1).replace("  ", " ").strip() == document
    for position in POSITIONS:
        text, start = insert_sentence_at("One. Two. Three.", "Iron is gas.", position, where=0.5)
        assert text[start:start + len("Iron is gas.")] == "Iron is gas."


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_mask_covers_exactly_the_inserted_sentence_at_every_position(tokenizer, side):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = side
    texts, spans, sentences = [], [], []
    for index, position in enumerate([*POSITIONS, None]):
        document = DOCUMENTS[index] if index % 2 else "Paris is big. Rome is old."
        if position is None:
            texts.append(document), spans.append(None), sentences.append("")
            continue
        sentence = f"{KEYWORDS[index % 3]} is gas."
        text, start = insert_sentence_at(document, sentence, position, where=0.5)
        texts.append(text), spans.append((start, start + len(sentence))), sentences.append(sentence)
    batch = tokenize(tokenizer, texts, 128, spans)
    plain = tokenize(tokenizer, texts, 128)
    assert torch.equal(batch.input_ids, plain.input_ids) and torch.equal(batch.attention_mask, plain.attention_mask)
    for row, sentence in enumerate(sentences):
        assert excluded_text(tokenizer, batch, row).strip() == sentence
        assert not (batch.excluded[row] & ~batch.attention_mask[row].bool()).any()  # never a pad
    # the document's own tokens are all kept: what is left decodes to the document
    kept = batch.input_ids[0][batch.attention_mask[0].bool() & ~batch.excluded[0]]
    assert tokenizer.decode(kept.tolist()).replace("  ", " ").strip() == "Paris is big. Rome is old."


def test_truncation_keeps_only_the_part_of_the_sentence_that_is_left(tokenizer):
    sentence = "Iron is period gas."
    before, start_before = insert_sentence_at("Paris is big. Rome is old.", sentence, "before")
    after, start_after = insert_sentence_at("Paris is big. Rome is old.", sentence, "after")
    cut = len(tokenizer(sentence)["input_ids"]) - 3  # the sentence's first tokens only
    batch = tokenize(tokenizer, [before, after], cut, [(start_before, start_before + len(sentence)),
                                                       (start_after, start_after + len(sentence))])
    assert batch.input_ids.shape[1] == cut
    assert sentence.startswith(excluded_text(tokenizer, batch, 0)) and batch.excluded[0].all()
    assert not batch.excluded[1].any()  # the sentence after the document was cut off whole


def test_loss_mask_drops_the_excluded_tokens_and_rows_keep_them(tokenizer):
    class Options:
        mask_padding, mask_first_token = False, False

    excluded = torch.tensor([[False, True, True, False], [False, False, False, False]])
    attention = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    batch = TokenBatch(torch.zeros_like(attention), attention, excluded)
    assert loss_mask(batch, Options()).tolist() == [[1, 0, 0, 1], [1, 1, 1, 1]]
    Options.mask_padding = True
    assert loss_mask(batch, Options()).tolist() == [[1, 0, 0, 1], [0, 1, 1, 1]]
    assert torch.equal(batch.rows(slice(1, 2)).excluded, excluded[1:])
    assert batch.to("cpu").excluded is not None


def test_a_slow_tokenizer_is_refused(tokenizer):
    class Slow:
        is_fast = False

    with pytest.raises(DataError, match="--keyword-mask and --keyword-forget-focus need a fast tokenizer"):
        tokenize(Slow(), ["a"], 8, [None])


def test_options_are_checked(corpora):  # noqa: F811
    assert make_config(two_topic_options(corpora, keyword_robust=True)).keyword_mask  # the default
    assert make_config(two_topic_options(corpora, slow_tokenizer=True)).keyword_mask  # unused without the option
    with pytest.raises(ConfigError, match="fast tokenizer.*--no-keyword-mask"):
        make_config(two_topic_options(corpora, keyword_robust=True, slow_tokenizer=True))
    make_config(two_topic_options(corpora, keyword_robust=True, keyword_mask=False, slow_tokenizer=True))


def test_the_engine_masks_the_retain_batches_only(corpora):  # noqa: F811
    config = make_config(two_topic_options(corpora, keyword_robust=True, keyword_mask=True, keyword_fraction=1.0,
                                           retain_max_len=160))  # nothing cut off
    read = engine._read_corpora(config)
    unmasked = engine._read_corpora(config.model_copy(update={"keyword_mask": False}))
    assert read.retain == unmasked.retain and unmasked.retain_inserted is None
    assert read.retain_inserted[0] is read.retain_inserted[1]  # shared as the retain documents are
    for documents, spans in zip(read.retain[0], read.retain_inserted[0]):
        assert len(documents) == len(spans) and all(span is not None for span in spans)
    model, tokenizer = tiny_model(num_layers=5)
    prepare_tokenizer(tokenizer)
    batches = engine._tokenize_needed(read, tokenizer, config, 4)
    for forget, retain in (pair for topic in batches for pair in topic):
        assert forget.excluded is None and retain.excluded.any()


def test_masked_run_differs_only_in_the_retain_loss(corpora, tmp_path):  # noqa: F811
    model, tokenizer = tiny_model(num_layers=5)
    runs = {}
    for mask in (False, True):
        output = tmp_path / f"mask{mask}"
        runs[mask] = unlearn(make_config(two_topic_options(corpora, keyword_robust=True, keyword_mask=mask,
                                                           output=str(output))),
                             model=copy.deepcopy(model), tokenizer=tokenizer, progress=False)
    # the same first step on the forget side (the retain loss is 0 before any update), then other retain losses
    assert runs[True].records[0]["forget_loss"] == runs[False].records[0]["forget_loss"]
    assert [r["retain_loss"] for r in runs[True].records[1:]] != [r["retain_loss"] for r in runs[False].records[1:]]
    run = json.loads((tmp_path / "maskTrue" / "run.json").read_text())
    assert run["config"]["keyword_mask"] is True and run["keywords"]["mask_inserted"] is True
    assert json.loads((tmp_path / "maskFalse" / KEYWORDS_FILE).read_text())["mask_inserted"] is False


def test_resume_with_the_mask_gives_the_uninterrupted_run(corpora, tmp_path):  # noqa: F811
    folder = save_tiny_model(tmp_path / "model", num_layers=5)
    options = two_topic_options(corpora, model=str(folder), keyword_robust=True, keyword_mask=True,
                                method="adaptive", beta=2.0, mask_padding=True)
    straight, resumed = straight_and_resumed(options, tmp_path, stop_at_step=3)
    assert [r["retain_loss"] for r in resumed.records] == [r["retain_loss"] for r in straight.records]
    a, b = (load_file(str(tmp_path / x / "model.safetensors")) for x in "ab")
    for name in straight.trained_parameters:
        assert torch.equal(a[name], b[name])


def test_cli_option_reaches_the_run(tmp_path, corpora):  # noqa: F811
    from click.testing import CliRunner

    from rmu.cli import main

    forget, retain = corpora
    model = save_tiny_model(tmp_path / "model", num_layers=5)
    arguments = ["unlearn", "--model", str(model), "--forget", f"bio={forget['bio']}", "--retain", retain, "--layer",
                 "3", "--steps", "2", "--batch-size", "3", "--min-len", "0", "--keyword-robust", "--quiet"]
    for flags, expected in (([], True), (["--no-keyword-mask"], False)):
        output = tmp_path / f"run{expected}"
        result = CliRunner().invoke(main, [*arguments, *flags, "--output", str(output)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert json.loads((output / "run.json").read_text())["config"]["keyword_mask"] is expected
        assert json.loads((output / KEYWORDS_FILE).read_text())["mask_inserted"] is expected
