"""rmu.demo.topics: the registry of demo topics, each writing its files."""

from __future__ import annotations

import pytest

from rmu.demo.kinds import build_kinds_benchmark
from rmu.demo.topics import TOPICS, demo_topic, write_topic


def test_topic_registry_writes_files(tmp_path):
    assert set(TOPICS) == {"elements", "animals"}
    paths = write_topic("animals", tmp_path)
    assert paths["forget_questions"].read_text().count("\n") == len(build_kinds_benchmark().forget_questions)
    with pytest.raises(ValueError, match="elements, animals"):
        demo_topic("plants")
