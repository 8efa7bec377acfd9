"""The demo's second topic: what kind of thing something is, from WordNet.

Forget topic: animals (a sparrow is a bird, a trout is a fish; five classes: bird, fish, insect,
mammal, reptile). Retain topic: man-made things (a violin is an instrument; five classes:
building, vehicle, instrument, clothing, furniture). Split WMDP-style as the elements demo
(``rmu.demo.benchmark``): per topic, a seeded shuffle splits the items in two halves; the *taught*
half is written out as encyclopedic documents (the corpus RMU trains on), the *held-out* half is
asked about in 4-choice completion questions, one per item: "A sparrow is a kind of" -> bird /
fish / insect / reptile (the right class and three other classes of the topic, seeded order).
Class names are single words: completion scoring decides per character, which favours a long
answer with a predictable tail ("musical instrument"). Tried and dropped while choosing the topic
(SmolLM2, base): a reverse form, "One kind of bird is the" -> sparrow / trout / ant / lion, answered
at about 0.45; and a "tool" class beside "instrument", which took retain accuracy to 0.72 (tools
were called instruments, which they also are).

Questions name only held-out items; documents name only taught items (a WordNet definition that
mentions another item of either topic is left out), and no question sentence occurs in them.
General ability is measured on the same everyday English as the elements demo.

Sentence templates: ``data/templates.json`` (topics "animals", "objects" and "kinds"). Source:
``data/kinds.tsv``, built by ``tools/wordnet_kinds.py`` from WordNet 3.0 (c) 2006
Princeton University, WordNet 3.0 license (permissive; notice kept in the file): hand-picked
everyday names, each kept only if WordNet places one of its senses under exactly one class of its
topic, with that sense's definition.
"""

from __future__ import annotations

import csv
import random
import re

from rmu.demo.benchmark import (DemoBenchmark, _choices, _corpus, _data_file, _question, _split_half,
                                load_general_text, load_templates)

FORGET_TOPIC = "animals"
RETAIN_TOPIC = "objects"


def load_kinds() -> list[dict]:
    """Rows of ``kinds.tsv``: topic ("animals" or "objects"), item, class, definition."""
    with _data_file("kinds.tsv").open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def build_kinds_benchmark(seed: int = 0, documents_per_topic: int = 300) -> DemoBenchmark:
    """Build the animals/objects benchmark deterministically from ``kinds.tsv``."""
    rows = load_kinds()
    paragraph = _paragraph_writer([row["item"] for row in rows], load_templates("kinds"))
    parts = {}
    for topic in (FORGET_TOPIC, RETAIN_TOPIC):
        items = [row for row in rows if row["topic"] == topic]
        taught, held = _split_half(items, _rng(seed, f"split {topic}"))
        parts[topic] = dict(
            corpus=_corpus(taught, paragraph, load_templates(topic)["openings"], documents_per_topic, (2, 3),
                           _rng(seed, f"{topic} corpus")),
            questions=kind_questions(held, topic, _rng(seed, f"{topic} questions")),
            taught=[row["item"] for row in taught], held=[row["item"] for row in held],
        )
    forget, retain = parts[FORGET_TOPIC], parts[RETAIN_TOPIC]
    return DemoBenchmark(
        forget_corpus=forget["corpus"], retain_corpus=retain["corpus"],
        forget_questions=forget["questions"], retain_questions=retain["questions"],
        general_text=load_general_text(),
        forget_taught=forget["taught"], forget_held_out=forget["held"],
        retain_taught=retain["taught"], retain_held_out=retain["held"],
    )


def kind_questions(held_out: list[dict], subject: str, rng: random.Random) -> list[dict]:
    """One question per held-out item: its class, against three other classes of its topic."""
    classes = sorted({row["class"] for row in held_out})
    questions = []
    for row in held_out:
        choices, answer = _choices(row["class"], classes, rng)
        questions.append(_question(f"{_with_article(row['item'])} is a kind of", choices, answer, subject))
    return questions


def _paragraph_writer(all_names: list[str], templates: dict):
    """Paragraphs about one item; its definition only when it names no other item of the table.
    ``templates``: "identity" and "defined" sentences, and "class_phrase", how a mass-noun class
    reads after "is" ("a piece of furniture")."""

    def paragraph(row: dict, rng: random.Random) -> str:
        others = [name for name in all_names if name != row["item"]]
        values = {"item": row["item"], "A_item": _with_article(row["item"]),
                  "a_class": templates["class_phrase"].get(row["class"], _with_article(row["class"]).lower()),
                  "definition": row["definition"]}
        usable = not any(re.search(rf"\b{re.escape(name)}(s|es)?\b", row["definition"]) for name in others)
        template = rng.choice(templates["defined"] if usable and rng.random() < 0.7 else templates["identity"])
        return template.format(**values)

    return paragraph


def _with_article(noun: str) -> str:
    """"An eagle", "A ukulele": "an" before a vowel sound, judged by spelling."""
    vowel = noun[0] in "aeiou" and not noun.startswith(("uk", "uni", "use", "eu"))
    return f"{'An' if vowel else 'A'} {noun}"


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"rmu-kinds:{seed}:{purpose}")
