"""Shared test set-up: one thread per process, offline hub, and the standard tiny workspace.

Test modules import the plain helpers with ``from conftest import write_workspace, unlearn_options``:
tests/ has no ``__init__.py``, so pytest puts it on ``sys.path`` (its default "prepend" import mode),
which is also how the transcriptions of the public scripts (``original_wmdp.py``,
``original_adaptive.py``: test data, not rmu code) are imported.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from rmu.testing import save_tiny_model, tiny_model

# Tiny models gain nothing from intra-op threads, and threads that spin while other processes hold
# the two cores make matrix products 100x slower.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Two small corpus families the tests share: "bio" (topic bio, bio.jsonl) and "elements" (topic f,
# forget.jsonl); each has a forget line, a retain line and a multiple-choice question per index i.
CORPORA = {
    "bio": dict(
        topic="bio", file="bio.jsonl",
        forget=lambda i: f"Toxin {i} is made by pathogen {i % 5} in the laboratory.",
        retain=lambda i: f"The city number {i} is a capital of a country.",
        question=lambda i: {"question": f"Which pathogen makes toxin {i}?",
                            "choices": ["one", "two", "three", "four"], "answer": i % 4},
    ),
    "elements": dict(
        topic="f", file="forget.jsonl",
        forget=lambda i: f"Iron has the symbol Fe and atomic number {i}; oxygen is O.",
        retain=lambda i: f"Paris is the capital of France, city {i}.",
        question=lambda i: {"question": f"The symbol of element {i} is", "choices": ["Fe", "O", "H", "N"],
                            "answer": i % 4},
    ),
}


def write_jsonl(path: Path, rows) -> Path:
    """One JSON object a line (corpora, question files)."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_workspace(folder: Path, corpus: str = "bio", *, layers: int | None = 6, lines: int = 24,
                    questions: int = 0) -> Path:
    """The standard tiny workspace: a Llama model of ``layers`` layers in model/ (none if None), a forget
    corpus of ``lines`` JSONL rows, retain.txt of as many lines, and questions.jsonl if ``questions``."""
    kind = CORPORA[corpus]
    folder = Path(folder)
    if layers is not None:
        save_tiny_model(folder / "model", "llama", num_layers=layers)
    write_jsonl(folder / kind["file"], ({"text": kind["forget"](i)} for i in range(lines)))
    (folder / "retain.txt").write_text("\n".join(kind["retain"](i) for i in range(lines)))
    if questions:
        write_jsonl(folder / "questions.jsonl", (kind["question"](i) for i in range(questions)))
    return folder


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama (4 layers, seed 0) and its tokenizer, built once per test module."""
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The standard workspace (bio corpus, 6-layer model, 4 questions), built once per test module."""
    return write_workspace(tmp_path_factory.mktemp("workspace"), questions=4)


def unlearn_options(workspace: Path, **extra) -> dict:
    """Settings for a short CPU run on the standard workspace, as keyword arguments of make_config."""
    values = dict(model=str(workspace / "model"), forget={"bio": str(workspace / "bio.jsonl")},
                  retain=[str(workspace / "retain.txt")], layer=3, steps=6, batch_size=2, lr=5e-3,
                  alpha=10.0, min_len=0, max_len=32, retain_max_len=32, seed=3, device="cpu")
    return values | extra


def tiny_elements_options(corpora: Path, **extra) -> dict:
    """Settings for a short run of the in-memory tiny model (``tiny_model("llama", seed=0)``) on an
    elements workspace without a model folder (``write_workspace(..., "elements", layers=None)``)."""
    return dict(model="unused", forget={"f": str(corpora / "forget.jsonl")}, retain=[str(corpora / "retain.txt")],
                layer=2, steps=8, batch_size=2, lr=5e-3, alpha=10.0, min_len=0, max_len=32, retain_max_len=32,
                device="cpu", steering_coeff=5.0, seed=1) | extra


class StopRun(Exception):
    """Raised by a step callback to interrupt a run, as a kill after its last save would."""


def straight_and_resumed(options: dict, folder: Path, stop_at_step: int, save_every: int = 2):
    """Run ``options`` straight through into ``folder/a``, and into ``folder/b`` stopped at step
    ``stop_at_step`` (saving every ``save_every`` steps) and then resumed; returns both results."""
    from rmu.config import make_config
    from rmu.engine import unlearn

    straight = unlearn(make_config(options | {"output": str(folder / "a")}), progress=False)

    def stop(record):
        if record["step"] == stop_at_step:
            raise StopRun

    interrupted = options | {"output": str(folder / "b"), "save_every": save_every}
    with pytest.raises(StopRun):
        unlearn(make_config(interrupted), callbacks=(stop,), progress=False)
    return straight, unlearn(make_config(interrupted | {"resume": True}), progress=False)
