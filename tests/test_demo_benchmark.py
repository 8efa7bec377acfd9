"""The demo benchmark (rmu.demo.benchmark): deterministic, WMDP-style, built from the shipped facts."""

from __future__ import annotations

import json
import re

import pytest

from rmu.demo import benchmark as bench
from rmu.demo.benchmark import build_benchmark, load_countries, load_elements, write_benchmark


@pytest.fixture(scope="module")
def benchmark():
    return build_benchmark(seed=0)


def test_shipped_facts_are_sound():
    elements = load_elements()
    assert [int(e["atomic_number"]) for e in elements] == list(range(1, 119))
    by_name = {e["name"]: e for e in elements}
    assert by_name["iron"]["symbol"] == "Fe" and by_name["iron"]["group"] == "8"
    assert by_name["gold"]["period"] == "6" and by_name["neon"]["category"] == "noble gas"
    assert len({e["symbol"] for e in elements}) == 118
    countries = load_countries()
    capitals = {c["country"]: c["capital"] for c in countries}
    assert capitals["France"] == "Paris" and capitals["Japan"] == "Tokyo"
    assert len(set(capitals.values())) == len(capitals) > 150


def test_deterministic_and_seed_dependent(benchmark):
    assert build_benchmark(seed=0) == benchmark
    assert build_benchmark(seed=1).forget_questions != benchmark.forget_questions


def test_sizes(benchmark):
    assert len(benchmark.forget_corpus) == len(benchmark.retain_corpus) == 300
    assert len(benchmark.forget_questions) >= 80 and len(benchmark.retain_questions) >= 80
    assert len(benchmark.general_text) >= 20


def test_questions_are_well_formed(benchmark):
    for question in benchmark.forget_questions + benchmark.retain_questions:
        assert set(question) == {"question", "choices", "answer", "subject"}
        assert len(question["choices"]) == 4 == len(set(question["choices"]))
        assert question["answer"] in range(4)
    # Seeded shuffling spreads the correct answer over all four positions.
    positions = [q["answer"] for q in benchmark.forget_questions]
    assert all(positions.count(i) > len(positions) / 8 for i in range(4))


def test_answers_are_true_facts(benchmark):
    symbols = {e["name"]: e["symbol"] for e in load_elements()}
    capitals = {bench._mid_sentence(c["country"]): c["capital"] for c in load_countries()}
    for question in benchmark.forget_questions:
        answer = question["choices"][question["answer"]]
        if match := re.fullmatch(r"The chemical symbol of (.+) is", question["question"]):
            assert symbols[match[1]] == answer
        else:
            match = re.fullmatch(r"The chemical element with the symbol (.+) is", question["question"])
            assert symbols[answer] == match[1]
    for question in benchmark.retain_questions:
        country = re.fullmatch(r"The capital of (.+) is", question["question"])[1]
        assert capitals[country] == question["choices"][question["answer"]]


def test_question_sentences_never_in_training_text(benchmark):
    corpus = " ".join(benchmark.forget_corpus + benchmark.retain_corpus + benchmark.general_text)
    for question in benchmark.forget_questions + benchmark.retain_questions:
        assert question["question"] not in corpus


def test_held_out_items_are_not_in_the_corpus(benchmark):
    assert not set(benchmark.forget_taught) & set(benchmark.forget_held_out)
    assert not set(benchmark.retain_taught) & set(benchmark.retain_held_out)
    forget_words = set(re.findall(r"[\w'-]+", " ".join(benchmark.forget_corpus).lower()))
    assert not set(benchmark.forget_held_out) & forget_words
    # Blank out the taught countries and the subregions ("Australia and New Zealand"), longest
    # first, so that "Guinea" is not found inside "Papua New Guinea"; no held-out name may remain.
    retain_text = " ".join(benchmark.retain_corpus)
    known = benchmark.retain_taught + [c["subregion"] for c in load_countries()]
    for name in sorted({bench._mid_sentence(n) for n in known}, key=len, reverse=True):
        retain_text = re.sub(rf"\b{re.escape(name)}\b", "#", retain_text)
    for country in benchmark.retain_held_out:
        assert not re.search(rf"\b{re.escape(bench._mid_sentence(country))}\b", retain_text), country
    # Every taught item is in its corpus, and the questions cover exactly the held-out items.
    assert all(name in forget_words for name in benchmark.forget_taught)
    asked = {re.fullmatch(r"The chemical symbol of (.+) is", q["question"])[1]
             for q in benchmark.forget_questions if q["question"].startswith("The chemical symbol")}
    assert asked == set(benchmark.forget_held_out)


def test_general_text_mentions_neither_topic(benchmark):
    text = " ".join(benchmark.general_text).lower()
    assert "capital" not in text and "chemical element" not in text
    for element in ("iron", "gold", "sodium", "hydrogen", "carbon"):
        assert not re.search(rf"\b{element}\b", text)


def test_written_files_parse(tmp_path, benchmark):
    paths = write_benchmark(tmp_path, benchmark)
    read = lambda name: [json.loads(line) for line in paths[name].read_text().splitlines()]
    assert [row["text"] for row in read("forget_corpus")] == benchmark.forget_corpus
    assert [row["text"] for row in read("retain_corpus")] == benchmark.retain_corpus
    assert read("forget_questions") == benchmark.forget_questions
    assert read("retain_questions") == benchmark.retain_questions
    assert paths["general_text"].read_text().splitlines() == benchmark.general_text


def test_templates_are_data_read_by_topic():
    templates = bench.load_templates("elements")
    assert templates["openings"][0] == "" and all("{" in t for t in templates["identity"])
    assert set(bench.load_templates("kinds")) == {"identity", "defined", "class_phrase"}
    with pytest.raises(KeyError, match="no topic 'planets'"):
        bench.load_templates("planets")
    with pytest.raises(KeyError):
        bench.load_templates("_comment")


def test_every_data_file_ships_with_the_package():
    """pyproject's package-data globs cover each file of rmu/demo/data, so ``pip install .`` ships it."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["rmu"]
    package = root / "src" / "rmu"
    files = [p.relative_to(package).as_posix() for p in (package / "demo" / "data").rglob("*") if p.is_file()]
    assert "demo/data/templates.json" in files
    assert all(any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs) for f in files)
