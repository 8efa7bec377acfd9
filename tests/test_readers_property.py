"""Property tests of the corpus and task readers: whatever a file holds, they read it or raise rmu's own
error naming the file (and the line where there is one), never anything else (issue #10)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmu.data import DataError, read_corpus
from rmu.tasks import TaskFormatError, load_task_file

CORPUS_SUFFIXES = (".jsonl", ".json", ".txt", ".csv", ".parquet")
TASK_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
# Records that look like corpus rows or questions often enough to get past the first checks.
text_records = st.dictionaries(st.sampled_from(["text", "txt", "id"]), json_values, max_size=3)
question_records = st.fixed_dictionaries(
    {},
    optional={
        "question": json_values,
        "choices": st.lists(json_values, max_size=30) | json_values,
        "answer": json_values | st.integers(-2, 30) | st.sampled_from(list("ABCDZ")),
        "A": json_values, "B": json_values, "subject": json_values,
    },
)


def _write(folder: str, suffix: str, content: bytes) -> Path:
    path = Path(folder) / f"input{suffix}"
    path.write_bytes(content)
    return path


def _check_error(error: Exception, path: Path, expected: type) -> None:
    assert isinstance(error, expected), f"{type(error).__name__}: {error}"
    assert str(path) in str(error), f"the message does not name the file: {error}"


def _read_corpus_or_error(path: Path):
    try:
        documents = read_corpus(str(path), min_len=0)
    except Exception as error:  # noqa: BLE001 - the property is about which errors escape
        _check_error(error, path, DataError)
        return None
    assert all(isinstance(d, str) for d in documents)
    return documents


def _load_task_or_error(path: Path):
    try:
        task = load_task_file(path)
    except Exception as error:  # noqa: BLE001
        _check_error(error, path, TaskFormatError)
        return None
    for question in task.questions:
        assert 2 <= len(question.choices) <= 26 and 0 <= question.answer < len(question.choices)
        assert all(c.strip() for c in question.choices) and len(set(c.strip() for c in question.choices)) == len(question.choices)
    return task


def _parquet(records: list[dict]) -> bytes | None:
    """Records as parquet bytes, or None when pyarrow cannot type a column (mixed JSON values)."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import io

    frame = pd.DataFrame(records)
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer)
    except Exception:  # noqa: BLE001 - pyarrow refuses many mixed columns; those inputs are skipped
        return None
    return buffer.getvalue()


@SETTINGS
@given(suffix=st.sampled_from(CORPUS_SUFFIXES), content=st.binary(max_size=400))
def test_corpus_readers_on_random_bytes(suffix, content):
    with tempfile.TemporaryDirectory() as folder:
        _read_corpus_or_error(_write(folder, suffix, content))


@SETTINGS
@given(suffix=st.sampled_from(CORPUS_SUFFIXES), content=st.text(max_size=300))
def test_corpus_readers_on_random_text(suffix, content):
    with tempfile.TemporaryDirectory() as folder:
        _read_corpus_or_error(_write(folder, suffix, content.encode("utf-8")))


@SETTINGS
@given(records=st.lists(text_records | json_values, max_size=6))
def test_corpus_json_readers_on_random_json(records):
    lines = "\n".join(json.dumps(r) for r in records).encode()
    with tempfile.TemporaryDirectory() as folder:
        for suffix, content in ((".jsonl", lines), (".json", json.dumps(records).encode())):
            path = _write(folder, suffix, content)
            documents = _read_corpus_or_error(path)
            if documents is not None:  # read: exactly the input's texts, never "None" for a null
                texts = [r if isinstance(r, str) else r["text"] for r in records]
                assert documents == [text for text in texts if text]


@SETTINGS
@given(rows=st.lists(st.none() | st.text(max_size=30), min_size=1, max_size=6))
def test_corpus_table_readers_never_train_on_null(rows):
    with tempfile.TemporaryDirectory() as folder:
        parquet = _parquet([{"text": r} for r in rows])
        if parquet is not None:
            documents = _read_corpus_or_error(_write(folder, ".parquet", parquet))
            assert documents is None or documents == [r for r in rows if r]


@SETTINGS
@given(suffix=st.sampled_from(TASK_SUFFIXES), content=st.binary(max_size=400))
def test_task_readers_on_random_bytes(suffix, content):
    with tempfile.TemporaryDirectory() as folder:
        _load_task_or_error(_write(folder, suffix, content))


@SETTINGS
@given(records=st.lists(question_records | json_values, max_size=4))
def test_task_readers_on_random_json(records):
    with tempfile.TemporaryDirectory() as folder:
        lines = "\n".join(json.dumps(r) for r in records).encode()
        _load_task_or_error(_write(folder, ".jsonl", lines))
        _load_task_or_error(_write(folder, ".json", json.dumps(records).encode()))
        dicts = [r for r in records if isinstance(r, dict)]
        if dicts:
            parquet = _parquet(dicts)
            if parquet is not None:
                _load_task_or_error(_write(folder, ".parquet", parquet))


def test_an_undecodable_byte_is_reported_at_its_line(tmp_path):
    for suffix in CORPUS_SUFFIXES[:4]:
        path = tmp_path / f"corpus{suffix}"
        path.write_bytes(b"first line\nsecond line\nthird \xff line\n")
        with pytest.raises(DataError, match=rf"{re.escape(str(path))}, line 3: not UTF-8 text \(byte 0xff\)"):
            read_corpus(str(path))
    task = tmp_path / "task.jsonl"
    task.write_bytes(b'{"question": "q", "choices": ["a", "b"], "answer": 0}\n\xc3\x28\n')
    with pytest.raises(TaskFormatError, match=rf"{re.escape(str(task))}, line 2: not UTF-8"):
        load_task_file(task)
