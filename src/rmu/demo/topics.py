"""The demo's topics, one registry: each builds a WMDP-style benchmark (forget and retain corpora,
held-out questions, general text) from facts shipped in ``rmu/demo/data``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rmu.demo.benchmark import DemoBenchmark, build_benchmark, write_benchmark
from rmu.demo.kinds import build_kinds_benchmark


@dataclass(frozen=True)
class DemoTopic:
    key: str  # the name users type: ``rmu demo --topic KEY``
    build: Callable[..., DemoBenchmark]  # (seed=0) -> benchmark
    forget_name: str  # the forget corpus's name in run configs
    forget_label: str  # for reports and charts
    retain_label: str
    summary: str  # one sentence for reports


TOPICS = {topic.key: topic for topic in (
    DemoTopic("elements", build_benchmark, "elements", "element symbols", "capitals",
              "Forget: chemical elements; retain: country capitals"),
    DemoTopic("animals", build_kinds_benchmark, "animals", "kinds of animals", "kinds of objects",
              "Forget: kinds of animals (WordNet); retain: kinds of man-made objects (WordNet)"),
)}
DEFAULT_TOPIC = "elements"


def demo_topic(key: str) -> DemoTopic:
    """The registry entry for ``key``, or a clear error listing the known topics."""
    try:
        return TOPICS[key]
    except KeyError:
        raise ValueError(f"unknown demo topic {key!r}; choose one of: {', '.join(TOPICS)}") from None


def write_topic(key: str, folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """Build topic ``key`` and write its files (forget.jsonl, retain.jsonl, forget_questions.jsonl,
    retain_questions.jsonl, general.txt) to ``folder``; returns the paths by name."""
    return write_benchmark(folder, demo_topic(key).build(seed=seed))
