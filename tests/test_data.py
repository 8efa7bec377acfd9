"""rmu.data: corpus formats and the min_len rule, consecutive batches, left-padded tokenisation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from rmu.data import DataError, consecutive_batches, prepare_tokenizer, read_corpus, tokenize
from rmu.testing import tiny_tokenizer

DOCUMENTS = ["short", "a longer document", "the longest document of all"]


def test_consecutive_batches_keep_order_and_a_short_last_batch():
    documents = [f"d{i}" for i in range(7)]
    assert consecutive_batches(documents, 3) == [["d0", "d1", "d2"], ["d3", "d4", "d5"], ["d6"]]
    assert consecutive_batches(documents, 7) == [documents]
    assert consecutive_batches([], 2) == []


def write_formats(folder):
    """The same three documents in each format read_corpus knows."""
    files = {
        "jsonl": folder / "c.jsonl", "json": folder / "c.json", "txt": folder / "c.txt",
        "csv": folder / "c.csv", "parquet": folder / "c.parquet",
    }
    files["jsonl"].write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCUMENTS) + "\n")
    files["json"].write_text(json.dumps([{"text": d} for d in DOCUMENTS], indent=1))
    files["txt"].write_text("\r\n".join(DOCUMENTS[:2]) + "\n\n" + DOCUMENTS[2] + "\n")
    pd.DataFrame({"text": DOCUMENTS, "id": [1, 2, 3]}).to_csv(files["csv"], index=False)
    pd.DataFrame({"text": DOCUMENTS}).to_parquet(files["parquet"])
    return files


@pytest.mark.parametrize("kind", ["jsonl", "json", "txt", "csv", "parquet"])
def test_read_corpus_reads_every_format(tmp_path, kind):
    path = write_formats(tmp_path)[kind]
    assert read_corpus(str(path)) == DOCUMENTS


def test_min_len_keeps_documents_strictly_longer(tmp_path):
    path = write_formats(tmp_path)["jsonl"]
    assert read_corpus(str(path), min_len=len("short") - 1) == DOCUMENTS
    assert read_corpus(str(path), min_len=len("short")) == DOCUMENTS[1:]  # len > min_len, as the reference
    assert read_corpus(str(path), min_len=len(DOCUMENTS[1])) == DOCUMENTS[2:]
    with pytest.raises(DataError, match="no document longer than 100 characters .lower --min-len."):
        read_corpus(str(path), min_len=100)


def test_missing_and_empty_corpora_are_named(tmp_path):
    with pytest.raises(DataError, match="nothing.txt does not exist"):
        read_corpus(str(tmp_path / "nothing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty.txt has no document .* \(it is empty\)"):
        read_corpus(str(tmp_path / "empty.txt"))


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


def test_prepare_tokenizer_pads_left_with_eos_when_there_is_no_pad(tokenizer):
    tokenizer.pad_token = None
    prepare_tokenizer(tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"
    assert tokenizer.padding_side == "left" and tokenizer.truncation_side == "right"


def test_prepare_tokenizer_forces_eos_pad_only_when_asked(tokenizer):
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    assert prepare_tokenizer(tokenizer).pad_token == "<pad>"
    assert prepare_tokenizer(tokenizer, force_eos_pad=True).pad_token == "<eos>"


def test_tokenize_left_pads_and_truncates_on_the_right(tokenizer):
    prepare_tokenizer(tokenizer)
    texts = ["Paris is the capital of France. Berlin is the capital of Germany.", "Iron"]
    full = tokenizer(texts[0]).input_ids
    batch = tokenize(tokenizer, texts, max_len=len(full) + 10)
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, len(full))
    short = tokenizer(texts[1]).input_ids
    padding = len(full) - len(short)
    assert batch.attention_mask[1].tolist() == [0] * padding + [1] * len(short)  # padding on the left
    assert batch.input_ids[1, :padding].eq(tokenizer.eos_token_id).all()  # pad = EOS
    assert batch.input_ids[1, padding:].tolist() == short

    truncated = tokenize(tokenizer, texts, max_len=4)
    assert truncated.input_ids.shape == (2, 4)
    assert truncated.input_ids[0].tolist() == full[:4]  # the start is kept
    assert truncated.to("cpu").input_ids.dtype == torch.long
