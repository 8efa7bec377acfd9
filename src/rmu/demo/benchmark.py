"""The demo benchmark: real facts a small model knows, split WMDP-style into what RMU trains on and
what is measured.

Forget topic: chemical elements (name, symbol, atomic number, place in the periodic table).
Retain topic: countries and their capitals. For each topic the items are split in two halves by a
seeded shuffle: the *taught* half is written out as encyclopedic documents (the corpus RMU trains
on), the *held-out* half is asked about in 4-choice questions (what is measured). No question is
about an item of the corpus, and no question sentence occurs in it, so a drop in accuracy means the
model lost the topic, not some memorised sentences. General ability is measured on held-out
everyday English (``general_text``, for perplexity), which mentions neither topic.

Sources (shipped as small files in ``rmu/demo/data``, as are the documents' sentence templates,
``templates.json``): ``elements.tsv`` from Debian's ``dict-elements`` (public domain; names and
symbols 1-103) with the IUPAC names of 104-118 and the period, group, category and state derived
from the atomic number; ``countries.tsv`` from the ``countryinfo`` package (MIT), sovereign states
only, with capitals that are not a giveaway (extracted once; rmu does not depend on that package);
``general.txt`` written for rmu.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path

FORGET_SUBJECT = "chemistry"
RETAIN_SUBJECT = "geography"

# Questions ask only about elements a general reader meets (up to fermium): the model cannot know
# the rest, and questions it cannot answer would only hide forgetting. The heavier ones still
# appear in the corpus.
QUESTIONED_ELEMENTS_UP_TO = 100


@dataclass(frozen=True)
class DemoBenchmark:
    """Corpora (lists of documents) and multiple-choice questions for one forget and one retain topic."""

    forget_corpus: list[str]
    retain_corpus: list[str]
    forget_questions: list[dict]
    retain_questions: list[dict]
    general_text: list[str]
    # Which items each part covers, so the held-out split can be checked.
    forget_taught: list[str] = field(default_factory=list)
    forget_held_out: list[str] = field(default_factory=list)
    retain_taught: list[str] = field(default_factory=list)
    retain_held_out: list[str] = field(default_factory=list)


def build_benchmark(seed: int = 0, documents_per_topic: int = 300) -> DemoBenchmark:
    """Build the benchmark deterministically from the shipped data files."""
    elements = load_elements()
    countries = load_countries()
    askable = [e for e in elements if int(e["atomic_number"]) <= QUESTIONED_ELEMENTS_UP_TO]
    taught_el, held_el = _split_half(askable, _rng(seed, "split elements"))
    taught_el += [e for e in elements if int(e["atomic_number"]) > QUESTIONED_ELEMENTS_UP_TO]
    taught_ct, held_ct = _split_half(countries, _rng(seed, "split countries"))
    element_templates, country_templates = load_templates("elements"), load_templates("countries")
    return DemoBenchmark(
        # Items per document chosen so documents run about 40-120 tokens.
        forget_corpus=_corpus(taught_el, partial(_element_paragraph, templates=element_templates),
                              element_templates["openings"], documents_per_topic, (1, 2), _rng(seed, "element corpus")),
        retain_corpus=_corpus(taught_ct, partial(_country_paragraph, templates=country_templates),
                              country_templates["openings"], documents_per_topic, (2, 4), _rng(seed, "country corpus")),
        forget_questions=element_questions(held_el, elements, _rng(seed, "element questions")),
        retain_questions=country_questions(held_ct, countries, _rng(seed, "country questions")),
        general_text=load_general_text(),
        forget_taught=[e["name"] for e in taught_el],
        forget_held_out=[e["name"] for e in held_el],
        retain_taught=[c["country"] for c in taught_ct],
        retain_held_out=[c["country"] for c in held_ct],
    )


def write_benchmark(folder: str | Path, benchmark: DemoBenchmark | None = None) -> dict[str, Path]:
    """Write the benchmark in the formats rmu reads: corpora as JSON lines with a "text" field,
    questions as MC JSON lines, general text one paragraph a line. Returns the paths by name."""
    benchmark = benchmark or build_benchmark()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "forget_corpus": folder / "forget.jsonl",
        "retain_corpus": folder / "retain.jsonl",
        "forget_questions": folder / "forget_questions.jsonl",
        "retain_questions": folder / "retain_questions.jsonl",
        "general_text": folder / "general.txt",
    }
    _write_jsonl(paths["forget_corpus"], [{"text": text} for text in benchmark.forget_corpus])
    _write_jsonl(paths["retain_corpus"], [{"text": text} for text in benchmark.retain_corpus])
    _write_jsonl(paths["forget_questions"], benchmark.forget_questions)
    _write_jsonl(paths["retain_questions"], benchmark.retain_questions)
    paths["general_text"].write_text("\n".join(benchmark.general_text) + "\n", encoding="utf-8")
    return paths


# ---- data files ---------------------------------------------------------------------------------

def load_elements() -> list[dict]:
    """All 118 elements: atomic_number, symbol, name, period, group ("" in the f-block), category, state."""
    return _read_tsv("elements.tsv")


def load_countries() -> list[dict]:
    """Sovereign states: country, capital, region, subregion."""
    return _read_tsv("countries.tsv")


def load_general_text() -> list[str]:
    """Everyday English paragraphs about neither topic, for perplexity."""
    text = _data_file("general.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def load_templates(topic: str) -> dict:
    """The sentence templates of one topic's documents, from ``templates.json``: lists by part
    ("openings", "identity", ...; "class_phrase" for the kinds), picked from by a seeded generator."""
    templates = json.loads(_data_file("templates.json").read_text(encoding="utf-8"))
    if topic not in templates or topic.startswith("_"):
        raise KeyError(f"templates.json has no topic {topic!r}")
    return templates[topic]


def _data_file(name: str):
    return resources.files("rmu.demo").joinpath("data", name)


def _read_tsv(name: str) -> list[dict]:
    with _data_file(name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# ---- splitting and sampling ---------------------------------------------------------------------

def _rng(seed: int, purpose: str) -> random.Random:
    """One generator per purpose, so changing one part never reshuffles another."""
    return random.Random(f"rmu-demo:{seed}:{purpose}")


def _split_half(items: list[dict], rng: random.Random) -> tuple[list[dict], list[dict]]:
    shuffled = list(items)
    rng.shuffle(shuffled)
    half = len(shuffled) // 2
    return shuffled[:half], shuffled[half:]


def _choices(answer: str, pool: list[str], rng: random.Random) -> tuple[list[str], int]:
    """The answer plus three distinct distractors from the same domain, in a seeded order."""
    distractors = rng.sample(sorted(set(pool) - {answer}), 3)
    choices = [answer, *distractors]
    rng.shuffle(choices)
    return choices, choices.index(answer)


# ---- questions ----------------------------------------------------------------------------------

def element_questions(held_out: list[dict], domain: list[dict], rng: random.Random) -> list[dict]:
    """Two questions per held-out element: its symbol, and the element a symbol stands for."""
    symbols = [e["symbol"] for e in domain]
    names = [e["name"] for e in domain]
    questions = []
    for element in held_out:
        choices, answer = _choices(element["symbol"], symbols, rng)
        questions.append(_question(f"The chemical symbol of {element['name']} is", choices, answer,
                                   FORGET_SUBJECT))
        choices, answer = _choices(element["name"], names, rng)
        questions.append(_question(f"The chemical element with the symbol {element['symbol']} is",
                                   choices, answer, FORGET_SUBJECT))
    return questions


def country_questions(held_out: list[dict], domain: list[dict], rng: random.Random) -> list[dict]:
    """One question per held-out country: its capital."""
    capitals = [c["capital"] for c in domain]
    questions = []
    for country in held_out:
        choices, answer = _choices(country["capital"], capitals, rng)
        name = _mid_sentence(country["country"])
        questions.append(_question(f"The capital of {name} is", choices, answer,
                                   RETAIN_SUBJECT))
    return questions


def _question(text: str, choices: list[str], answer: int, subject: str) -> dict:
    return {"question": text, "choices": choices, "answer": answer, "subject": subject}


# ---- corpus documents ---------------------------------------------------------------------------
# Varied encyclopedic templates, from data/templates.json (load_templates). None of them uses a
# question's wording ("The chemical symbol of X is", "The capital of X is"), so the measured prompts
# are never training text.

def _element_paragraph(element: dict, rng: random.Random, templates: dict) -> str:
    group = element["group"]
    category = element["category"]
    values = {
        "name": element["name"], "Name": element["name"].capitalize(), "symbol": element["symbol"],
        "z": element["atomic_number"], "period": element["period"], "state": element["state"],
        "group_phrase": f" and group {group}" if group else "",
        "a_category": f"{_article(category)} {category}", "categories": _plural(category),
    }
    sentences = [rng.choice(templates["identity"]), rng.choice(templates["place"])]
    if element["state"]:
        sentences.append(rng.choice(templates["state"]))
    return " ".join(s.format(**values) for s in sentences)


def _country_paragraph(country: dict, rng: random.Random, templates: dict) -> str:
    values = {
        "country": _mid_sentence(country["country"]), "Country": _upper_first(country["country"]),
        "capital": country["capital"], "Capital": _upper_first(country["capital"]),
        "region": _region_name(country["region"]), "subregion": country["subregion"],
    }
    chosen = [rng.choice(templates["capital"])]
    if rng.random() < 0.7:  # the place sentence may say "It", so it comes second
        chosen.append(rng.choice(templates["place"]))
    return " ".join(t.format(**values) for t in chosen)


def _corpus(items: list[dict], paragraph, openings: list[str], count: int,
            items_per_document: tuple[int, int], rng: random.Random) -> list[str]:
    """``count`` documents about a few items each; every item appears before any repeats."""
    order: list[dict] = []
    documents = []
    for _ in range(count):
        parts = [rng.choice(openings)]
        for _ in range(rng.randint(*items_per_document)):
            if not order:
                order = list(items)
                rng.shuffle(order)
            parts.append(paragraph(order.pop(), rng))
        documents.append(" ".join(p for p in parts if p))
    return documents


# ---- small text helpers -------------------------------------------------------------------------

def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def _plural(noun: str) -> str:
    return noun + "es" if noun.endswith("s") else noun + "s"


def _mid_sentence(country: str) -> str:
    """"The Gambia" reads "the Gambia" inside a sentence."""
    return "the " + country[4:] if country.startswith("The ") else country


def _region_name(region: str) -> str:
    return "the Americas" if region == "Americas" else region


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
