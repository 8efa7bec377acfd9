"""Corpora in, token batches out.

A corpus is a list of documents read from JSON lines (a "text" field), plain text (one document per
line), CSV or parquet (a "text" column), or a Hugging Face dataset (``hf:NAME[:CONFIG][:SPLIT]``,
online only). Documents are grouped into consecutive batches and tokenised once, with left padding
and right truncation as the published code does (pad = EOS when the tokenizer has no pad token;
``force_eos_pad`` always, as the published code).

``read_corpus_as_published`` reads a corpus the way WMDP's ``get_data`` does (``corpus_reading:
original``): a forget file's "text" field only when its name contains ``bio-forget-corpus``, every
other forget file as raw lines (JSON syntax and newline included); retain rows by their text,
as they are (wikitext's headings, short and empty rows included); a document is kept when
``len(text) > min_len``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


class DataError(ValueError):
    """A corpus is missing, empty or malformed; the message names the file and the fix."""


def read_corpus(source: str, min_len: int = 0) -> list[str]:
    """Documents of ``source`` longer than ``min_len`` characters (the reference keeps len > min_len)."""
    if source.startswith("hf:"):
        documents = _read_hub_dataset(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"corpus file {source} does not exist")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            documents = _read_json_lines(path) if suffix == ".jsonl" or _looks_like_lines(path) else _read_json(path)
        elif suffix in (".csv", ".parquet"):
            documents = _read_table(path)
        else:
            documents = [line.rstrip("\n") for line in path.open(encoding="utf-8")]
            documents = [d for d in documents if d.strip()]
    kept = [str(d) for d in documents if len(d) > min_len]
    if not kept:
        raise DataError(
            f"corpus {source} has no document longer than {min_len} characters"
            + (" (lower --min-len)" if documents else " (it is empty)")
        )
    return kept


def read_corpus_as_published(source: str, min_len: int, forget: bool) -> list[str]:
    """Documents as WMDP's ``get_data`` reads them (see the module doc); ``len(text) > min_len`` kept."""
    path = Path(source)
    if source.startswith("hf:"):
        rows = _read_hub_dataset(source)
    elif not path.is_file():
        raise DataError(f"corpus file {source} does not exist")
    elif forget and "bio-forget-corpus" not in path.name:
        with path.open(encoding="utf-8") as handle:
            rows = list(handle)  # raw lines, newline included (universal newlines, as open() reads them)
    elif path.suffix.lower() == ".jsonl":
        rows = _json_lines_rows(path)
    else:
        rows = read_corpus(source, min_len=-1)  # other formats: their rows as the usual reader finds them
    kept = [str(text) for text in rows if len(text) > min_len]
    if not kept:
        raise DataError(f"corpus {source} has no document longer than {min_len} characters")
    return kept


def _json_lines_rows(path: Path) -> list[str]:
    """The "text" field of every JSON line, as it is (empty and heading rows included)."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
                rows.append(_text_of(record, f"{path}, line {number}"))
    return rows


def _looks_like_lines(path: Path) -> bool:
    with path.open(encoding="utf-8") as handle:
        return handle.read(1) == "{"


def _text_of(record: object, where: str) -> str:
    if not isinstance(record, dict) or "text" not in record:
        raise DataError(f"{where}: expected an object with a \"text\" field")
    return str(record["text"])


def _read_json_lines(path: Path) -> list[str]:
    documents = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            documents.append(_text_of(record, f"{path}, line {number}"))
    return documents


def _read_json(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects with a \"text\" field, or JSON lines")
    return [d if isinstance(d, str) else _text_of(d, f"{path}, item {i}") for i, d in enumerate(data)]


def _read_table(path: Path) -> list[str]:
    import pandas as pd

    frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    if "text" not in frame.columns:
        raise DataError(f"{path}: no \"text\" column (columns: {', '.join(map(str, frame.columns))})")
    return [str(t) for t in frame["text"].dropna()]


def _read_hub_dataset(source: str) -> list[str]:
    parts = source[3:].split(":")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 else None) or None, parts[2] if len(parts) > 2 else "train"
    try:
        from datasets import load_dataset

        dataset = load_dataset(name, config, split=split)
    except Exception as error:  # the datasets library raises many kinds; all mean "not available"
        raise DataError(
            f"could not load the Hugging Face dataset {source} ({type(error).__name__}: {error}); "
            "this needs the hub (online), or pass a local file instead"
        ) from None
    if "text" not in dataset.column_names:
        raise DataError(f"dataset {source} has no \"text\" column (columns: {dataset.column_names})")
    return [str(t) for t in dataset["text"]]


def consecutive_batches(documents: list[str], batch_size: int) -> list[list[str]]:
    """[d0..d(n-1)] -> [[d0..d(b-1)], [db..], ...]; the last batch may be shorter, as in the reference."""
    return [documents[i : i + batch_size] for i in range(0, len(documents), batch_size)]


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (batch, tokens), left padded
    attention_mask: torch.Tensor  # (batch, tokens), 1 on real tokens

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device))


def prepare_tokenizer(tokenizer, force_eos_pad: bool = False):
    """Left padding, right truncation; pad = EOS when there is no pad token, or always with ``force_eos_pad``."""
    if force_eos_pad:
        if tokenizer.eos_token is None:
            raise DataError("pad_eos needs a tokenizer with an EOS token; this one has none")
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DataError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "right"
    return tokenizer


def tokenize(tokenizer, texts: list[str], max_len: int) -> TokenBatch:
    encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len)
    return TokenBatch(encoded["input_ids"], encoded["attention_mask"])
