"""tools/wordnet_kinds.py (builds the second topic's fact table) on a tiny fake WordNet database."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "wordnet_kinds.py"

# offset -> (word, hypernym offsets, gloss), in WordNet's data.noun layout
SYNSETS = {
    "00000001": ("organism", [], "a living thing"),
    "00000002": ("bird", ["00000001"], "warm-blooded egg-laying vertebrates"),
    "00000003": ("fish", ["00000001"], "cold-blooded aquatic vertebrates"),
    "00000004": ("sparrow", ["00000002"], 'small singing bird; "a sparrow sang"'),
    "00000005": ("eel", ["00000003"], "long snakelike fish"),
    "00000006": ("flier", ["00000002"], "a bird that flies"),
    "00000007": ("flier", ["00000003"], "a fish that glides"),
    "00000008": ("robin", ["00000004"], "thrush-like bird"),  # a bird two levels down
}


def _write_wordnet(folder: Path) -> None:
    folder.mkdir()
    lines = ["  1 This software and database is being provided to you ... (license header)"]
    for offset, (word, parents, gloss) in SYNSETS.items():
        pointers = " ".join(f"@ {parent} n 0000" for parent in parents)
        lines.append(f"{offset} 05 n 01 {word} 0 {len(parents):03d} {pointers} | {gloss}".replace("  ", " "))
    (folder / "data.noun").write_text("\n".join(lines) + "\n", encoding="latin-1")
    senses: dict[str, list[str]] = {}
    for offset, (word, _, _) in SYNSETS.items():
        senses.setdefault(word, []).append(offset)
    index = ["  1 license header"] + [f"{word} n {len(offs)} 1 @ {len(offs)} 0 {' '.join(offs)}"
                                      for word, offs in sorted(senses.items())]
    (folder / "index.noun").write_text("\n".join(index) + "\n", encoding="latin-1")


@pytest.fixture
def tool(monkeypatch):
    spec = importlib.util.spec_from_file_location("wordnet_kinds", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CLASSES", {"animals": {"bird": ("bird", "sparrow robin flier"),
                                                        "fish": ("fish", "eel flier unknown")}})
    return module


def test_table_from_a_tiny_wordnet(tmp_path, tool, capsys):
    _write_wordnet(tmp_path / "wn")
    tool.main(str(tmp_path / "wn"))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("# WordNet 3.0 Copyright") and lines[1] == "topic\titem\tclass\tdefinition"
    rows = [line.split("\t") for line in lines[2:]]
    assert rows == [
        ["animals", "sparrow", "bird", "small singing bird"],  # usage example dropped
        ["animals", "robin", "bird", "thrush-like bird"],  # found through two hypernym levels
        ["animals", "eel", "fish", "long snakelike fish"],
    ]
    # "flier" has a sense under each class (no single right answer); "unknown" is not in WordNet.
    assert "dropped flier (bird)" in err and "dropped flier (fish)" in err and "dropped unknown (fish)" in err
