"""Corpora in, token batches out.

A corpus is a list of documents read from JSON lines (a "text" field), plain text (one document per
line), CSV or parquet (a "text" column), or a Hugging Face dataset (``hf:NAME[:CONFIG][:SPLIT]``,
online only). Documents are grouped into consecutive batches and tokenised once, with left padding
and right truncation as the published code does (pad = EOS when the tokenizer has no pad token;
``force_eos_pad`` always, as the published code).

Files are read as UTF-8 (a byte-order mark is allowed). Whatever a file holds, reading it either
gives documents or raises :class:`DataError` naming the file (and the line, where there is one):
a "text" that is null or not a string is refused, never trained on as the string "None"; an empty
CSV or parquet cell is an empty document and is dropped like an empty line of a text file.

``read_corpus_as_published`` reads a corpus the way WMDP's ``get_data`` does (``corpus_reading:
original``): a forget file's "text" field only when its name contains ``bio-forget-corpus``, every
other forget file as raw lines (JSON syntax and newline included); retain rows by their text,
as they are (wikitext's headings, short and empty rows included); a document is kept when
``len(text) > min_len``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rmu.errors import RmuError


class DataError(RmuError, ValueError):
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
            documents = _read_plain_lines(path)
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
        # Raw lines, newline included, with universal newlines as open() reads them.
        rows = list(io.StringIO(read_text(path), newline=None))
    elif path.suffix.lower() == ".jsonl":
        rows = _read_json_lines(path)
    else:
        rows = read_corpus(source, min_len=-1)  # other formats: their rows as the usual reader finds them
    kept = [str(text) for text in rows if len(text) > min_len]
    if not kept:
        raise DataError(f"corpus {source} has no document longer than {min_len} characters")
    return kept


def _looks_like_lines(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4).removeprefix(b"\xef\xbb\xbf")[:1] == b"{"


def read_text(path: Path) -> str:
    """The file as UTF-8 text; an undecodable byte is a DataError naming the file and its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); "
                        "save the file as UTF-8") from None


def _parse_json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read") from None


def _text_of(record: object, where: str) -> str:
    if not isinstance(record, dict) or "text" not in record:
        raise DataError(f"{where}: expected an object with a \"text\" field")
    text = record["text"]
    if not isinstance(text, str):
        raise DataError(f"{where}: \"text\" is {_json_kind(text)}, not a string; give each document as "
                        "text, or remove the row")
    return text


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _read_json_lines(path: Path) -> list[str]:
    documents = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        documents.append(_text_of(_parse_json(line, where), where))
    return documents


def _read_json(path: Path) -> list[str]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects with a \"text\" field, or JSON lines")
    return [d if isinstance(d, str) else _text_of(d, f"{path}, item {i}") for i, d in enumerate(data)]


def _read_plain_lines(path: Path) -> list[str]:
    """One document per line (any line ending), blank lines skipped."""
    lines = (line.rstrip("\n") for line in io.StringIO(read_text(path), newline=None))
    return [line for line in lines if line.strip()]


def _read_table(path: Path) -> list[str]:
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(io.StringIO(read_text(path)))
    except DataError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        # pyarrow's ArrowInvalid is a ValueError; pandas reports the line of a malformed CSV row.
        kind = "parquet" if path.suffix.lower() == ".parquet" else "CSV"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: not a readable {kind} table ({reason})") from None
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
    return [_text_of({"text": t}, f"dataset {source}, row {i}") for i, t in enumerate(dataset["text"])]


def consecutive_batches(documents: list[str], batch_size: int) -> list[list[str]]:
    """[d0..d(n-1)] -> [[d0..d(b-1)], [db..], ...]; the last batch may be shorter, as in the reference."""
    return [documents[i : i + batch_size] for i in range(0, len(documents), batch_size)]


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (batch, tokens), left padded
    attention_mask: torch.Tensor  # (batch, tokens), 1 on real tokens
    # (batch, tokens), True on tokens the losses leave out (the sentences --keyword-robust inserts,
    # see tokenize); None: none left out
    excluded: torch.Tensor | None = None
    # (batch,), how much each row's positions count in the loss's mean (--keyword-retain-weight: the
    # augmented retain documents'); None: 1 for every row
    row_weights: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "TokenBatch":
        return self._map(lambda tensor: tensor.to(device))

    def rows(self, rows: slice) -> "TokenBatch":
        return self._map(lambda tensor: tensor[rows])

    def _map(self, apply) -> "TokenBatch":
        """The batch with ``apply`` done to each of its tensors (the optional ones kept None)."""
        return TokenBatch(*(None if tensor is None else apply(tensor) for tensor in
                            (self.input_ids, self.attention_mask, self.excluded, self.row_weights)))


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


Span = tuple[int, int]  # characters [start, end) of a text (an inserted sentence, a left-out stretch)


def tokenize(tokenizer, texts: list[str], max_len: int,
             excluded_spans: list[Span | list[Span] | None] | None = None, window: int | None = None) -> TokenBatch:
    """``texts`` as one padded, truncated batch.

    ``excluded_spans``: per text, characters [start, end) whose tokens the losses leave out (or None, or
    a list of such spans).
    A token is left out when its characters overlap the span (a token straddling its edge too); the
    tokenizer's offset mapping says which characters each token covers, so this holds for either
    padding side and after truncation (a span cut off leaves out only the tokens kept). Pads and
    special tokens cover no character and are never marked. Needs a fast tokenizer.

    ``window`` (``--keyword-window``): in a row with a span, the real tokens more than ``window`` tokens
    after the span's last token are left out too, so only the text right after the sentence (and the
    text before it) counts.
    """
    if excluded_spans is None:
        encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len)
        return TokenBatch(encoded["input_ids"], encoded["attention_mask"])
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("--keyword-mask and --keyword-forget-focus need a fast tokenizer (its offset mapping says "
                        "which tokens to leave out); use one, or add --no-keyword-mask")
    encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len,
                        return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]  # (batch, tokens, 2); (0, 0) for pads and special tokens
    real = encoded["attention_mask"].bool()
    excluded = torch.zeros(offsets.shape[:2], dtype=torch.bool)
    for row, spans in enumerate(excluded_spans):
        if not spans:
            continue
        for start, end in ([spans] if isinstance(spans[0], int) else spans):
            excluded[row] |= (offsets[row, :, 0] < end) & (offsets[row, :, 1] > start) & real[row]
        if window is not None and excluded[row].any():
            last = int(excluded[row].nonzero().max())
            excluded[row, last + 1 + window:] |= real[row, last + 1 + window:]
    return TokenBatch(encoded["input_ids"], encoded["attention_mask"], excluded)
