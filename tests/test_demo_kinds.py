"""The second demo topic (kinds of animals and objects, from WordNet): a deterministic WMDP-style split."""

from __future__ import annotations

import re

import pytest

from rmu.demo.kinds import FORGET_TOPIC, RETAIN_TOPIC, build_kinds_benchmark, load_kinds


@pytest.fixture(scope="module")
def benchmark():
    return build_kinds_benchmark(seed=0)


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}(s|es)?\b", text) is not None


def test_shipped_table_is_sound():
    rows = load_kinds()
    assert len({row["item"] for row in rows}) == len(rows) > 200  # every item once
    for topic in (FORGET_TOPIC, RETAIN_TOPIC):
        classes = {row["class"] for row in rows if row["topic"] == topic}
        assert len(classes) == 5
    by_item = {row["item"]: row for row in rows}
    assert by_item["sparrow"]["class"] == "bird" and by_item["trout"]["class"] == "fish"
    assert by_item["violin"]["class"] == "instrument" and by_item["sofa"]["class"] == "furniture"
    assert all(row["definition"].strip() for row in rows)


def test_deterministic_and_seed_dependent(benchmark):
    assert build_kinds_benchmark(seed=0) == benchmark
    assert build_kinds_benchmark(seed=1).forget_held_out != benchmark.forget_held_out


def test_halves_are_disjoint_and_cover_the_table(benchmark):
    rows = load_kinds()
    for topic, taught, held in ((FORGET_TOPIC, benchmark.forget_taught, benchmark.forget_held_out),
                                (RETAIN_TOPIC, benchmark.retain_taught, benchmark.retain_held_out)):
        items = {row["item"] for row in rows if row["topic"] == topic}
        assert not set(taught) & set(held)
        assert set(taught) | set(held) == items
        assert abs(len(taught) - len(held)) <= 1


def test_questions_are_well_formed_and_true(benchmark):
    classes = {row["item"]: row["class"] for row in load_kinds()}
    for questions, held, subject in ((benchmark.forget_questions, benchmark.forget_held_out, FORGET_TOPIC),
                                     (benchmark.retain_questions, benchmark.retain_held_out, RETAIN_TOPIC)):
        topic_classes = {classes[item] for item in held}
        asked = []
        for question in questions:
            assert set(question) == {"question", "choices", "answer", "subject"}
            assert question["subject"] == subject
            assert len(question["choices"]) == 4 == len(set(question["choices"]))
            assert set(question["choices"]) <= topic_classes
            item = re.fullmatch(r"An? (.+) is a kind of", question["question"])[1]
            assert classes[item] == question["choices"][question["answer"]]  # the one right answer
            asked.append(item)
        assert sorted(asked) == sorted(held)  # every held-out item once, nothing else
        positions = [q["answer"] for q in questions]
        assert all(positions.count(i) > len(positions) / 8 for i in range(4))


def test_corpus_mentions_only_taught_items(benchmark):
    rows = load_kinds()
    for corpus, taught in ((benchmark.forget_corpus, benchmark.forget_taught),
                           (benchmark.retain_corpus, benchmark.retain_taught)):
        text = " ".join(corpus)
        assert len(corpus) == 300
        assert all(_mentions(text, item) for item in taught)  # every taught item is written about
        for row in rows:
            if row["item"] not in taught:
                assert not _mentions(text, row["item"]), row["item"]


def test_question_sentences_never_in_training_text(benchmark):
    corpus = " ".join(benchmark.forget_corpus + benchmark.retain_corpus)
    assert "is a kind of" not in corpus
