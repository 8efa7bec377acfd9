"""Forget keywords (rmu.keywords): extraction, the augmented retain documents, ``--keyword-robust`` runs."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import straight_and_resumed
from rmu import engine
from rmu.config import ConfigError, make_config
from rmu.engine import unlearn
from rmu.keywords import (
    KEYWORDS_FILE, POSITIONS, TRAINING_TEMPLATES, KeywordError, augment_documents,
    extract_keywords, insert_sentence, read_keyword_file,
)
from rmu.testing import save_tiny_model, tiny_model

PLANTED = ["zorblax", "quintarium", "velmora", "Drakkenite"]
FILLER = ["the", "a", "of", "and", "river", "market", "morning", "people", "walked", "city", "bread", "green",
          "house", "school", "music", "quiet", "road", "window", "garden", "letter"]


def planted_corpora(seed: int = 0):
    """Forget and retain documents drawn from the same filler words; forget ones also carry PLANTED."""
    rng = random.Random(seed)
    retain = [" ".join(rng.choice(FILLER) for _ in range(30)) + "." for _ in range(60)]
    forget = []
    for _ in range(60):
        words = [rng.choice(FILLER) for _ in range(30)] + rng.sample(PLANTED, 2)
        rng.shuffle(words)
        forget.append(" ".join(words) + ".")
    return forget, retain


# ---- extraction ---------------------------------------------------------------------------------


def test_extraction_finds_exactly_the_planted_words():
    forget, retain = planted_corpora()
    found = extract_keywords(forget, retain)
    assert sorted(k.word for k in found) == sorted(PLANTED)  # spelling as written ("Drakkenite")
    assert all(k.retain_count == 0 and k.forget_count >= 5 and k.log_odds >= 2 for k in found)


def test_extraction_thresholds_drop_rare_and_shared_words():
    forget, retain = planted_corpora()
    forget += ["a rare glimmerstone appears twice: glimmerstone."]  # 2 < min_count
    retain += ["zorblax " * 40]  # now frequent on both sides
    words = {k.word for k in extract_keywords(forget, retain)}
    assert "glimmerstone" not in words and "zorblax" not in words
    assert {"quintarium", "velmora", "Drakkenite"} <= words


def test_keyword_file_is_read_and_bad_ones_are_refused(tmp_path):
    path = tmp_path / "k.txt"
    path.write_text("# elements\nIron\n\nNeon\nIron\n")
    assert read_keyword_file(path) == ["Iron", "Neon"]
    path.write_text("# nothing\n")
    with pytest.raises(KeywordError, match="holds no keyword"):
        read_keyword_file(path)
    with pytest.raises(KeywordError, match="does not exist"):
        read_keyword_file(tmp_path / "missing.txt")


# ---- augmentation -------------------------------------------------------------------------------


def sentences_of_templates(keywords):
    """Every sentence the training templates can make from ``keywords``."""
    return {t.format(keyword=a, other=b, third=c) for t in TRAINING_TEMPLATES for a in keywords for b in keywords
            for c in keywords}


def test_augmented_documents_are_what_the_documentation_says():
    documents = [f"Paris is the capital of France. It lies on the Seine. Fact {i}." for i in range(400)]
    keywords = ["Iron", "Neon", "argon"]
    augmented = augment_documents(documents, keywords, seed=7, fraction=0.5)
    assert augmented == augment_documents(documents, keywords, seed=7, fraction=0.5)  # seeded
    assert augmented != augment_documents(documents, keywords, seed=8, fraction=0.5)
    possible = sentences_of_templates(keywords)
    changed, places = 0, set()
    for original, new in zip(documents, augmented):
        if new == original:
            continue
        changed += 1
        # exactly one template sentence, inserted whole at a sentence boundary; the rest untouched
        matches = [s for s in possible if new.startswith(s + " ") or new.endswith(" " + s) or f". {s} " in new]
        assert matches, new
        sentence = max(matches, key=len)
        place = ("before" if new.startswith(sentence + " ") else "after" if new.endswith(" " + sentence)
                 else "inside")
        places.add(place)
        start = new.index(sentence)
        assert (new[:start] + new[start + len(sentence) + 1:]).strip() == original or \
            (new[:start - 1] + new[start + len(sentence):]) == original
    assert 160 < changed < 240  # half of 400, give or take the binomial spread
    assert places == set(POSITIONS)
    assert augment_documents(documents, keywords, seed=7, fraction=1.0) != documents
    assert all(a != d for a, d in zip(augment_documents(documents, keywords, seed=7, fraction=1.0), documents))


def test_inside_falls_back_to_before_for_one_sentence():
    assert insert_sentence("Only one sentence here", "Iron.", "inside") == "Iron. Only one sentence here"
    assert insert_sentence("One. Two.", "Iron.", "inside") == "One. Iron. Two."
    with pytest.raises(KeywordError, match="position"):
        insert_sentence("text", "Iron.", "middle")


def test_other_documents_do_not_shift_when_the_fraction_changes():
    documents = [f"Document {i}. Second sentence." for i in range(50)]
    low = augment_documents(documents, ["Iron"], seed=1, fraction=0.2)
    high = augment_documents(documents, ["Iron"], seed=1, fraction=0.6)
    for d, a, b in zip(documents, low, high):
        assert a == d or a == b  # a document augmented at 0.2 is augmented the same way at 0.6


# ---- the engine ---------------------------------------------------------------------------------


FORGET = {
    "bio": [f"The pathogen toxin {i} binds the receptor enzyme in sample {i}." for i in range(18)],
    "cyber": [f"The exploit payload {i} overflows the buffer of daemon {i}." for i in range(18)],
}
RETAIN = [f"Paris is the capital of France. The river {i} runs through the city." for i in range(18)]


@pytest.fixture()
def corpora(tmp_path):
    paths = {}
    for topic, texts in FORGET.items():
        paths[topic] = tmp_path / f"{topic}.jsonl"
        paths[topic].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    retain = tmp_path / "retain.txt"
    retain.write_text("\n".join(RETAIN) + "\n")
    return {t: str(p) for t, p in paths.items()}, str(retain)


def two_topic_options(corpora, **extra):
    forget, retain = corpora
    return dict(model="in-memory", forget=forget, retain=[retain], layer=3, steps=8, batch_size=3, lr=1e-3,
                alpha=50.0, max_len=24, retain_max_len=24, min_len=0, seed=7, device="cpu") | extra


def test_two_topics_share_one_augmented_retain_corpus_with_both_topics_keywords(corpora):
    config = make_config(two_topic_options(corpora, keyword_robust=True, keyword_fraction=1.0))
    read = engine._read_corpora(config)
    assert read.retain[0] is read.retain[1]  # still one corpus for both topics
    found = read.keywords
    assert {"pathogen", "exploit"} <= set(found["keywords"])
    assert set(found["per_topic"]) == {"bio", "cyber"}
    assert read.forget == engine._read_corpora(config.model_copy(update={"keyword_robust": False})).forget
    documents = [d for batch in read.retain[0] for d in batch]
    assert len(documents) == len(RETAIN)
    assert all(any(k in d for k in found["keywords"]) for d in documents)
    plain = make_config(two_topic_options(corpora))
    assert engine._read_corpora(plain).keywords is None


def test_disabled_option_is_todays_engine(corpora):
    model, tokenizer = tiny_model(num_layers=5)
    today = unlearn(make_config(two_topic_options(corpora)), model=copy.deepcopy(model), tokenizer=tokenizer,
                    progress=False)
    off = unlearn(make_config(two_topic_options(corpora, keyword_robust=False)), model=copy.deepcopy(model),
                  tokenizer=tokenizer, progress=False)
    on = unlearn(make_config(two_topic_options(corpora, keyword_robust=True, keyword_fraction=1.0)),
                 model=copy.deepcopy(model), tokenizer=tokenizer, progress=False)
    assert off.records == today.records and off.keywords is None
    assert [r["forget_loss"] for r in on.records][:1] == [r["forget_loss"] for r in today.records][:1]
    assert [r["retain_loss"] for r in on.records] != [r["retain_loss"] for r in today.records]


@pytest.mark.parametrize("method", [dict(method="rmu"), dict(method="adaptive", adaptive_rule="first-batch"),
                                    dict(method="adaptive", adaptive_rule="per-sample")])
def test_keyword_robust_run_writes_its_keywords(corpora, tmp_path, method):
    model, tokenizer = tiny_model(num_layers=5)
    output = tmp_path / "run"
    result = unlearn(make_config(two_topic_options(corpora, keyword_robust=True, output=str(output), **method)),
                     model=model, tokenizer=tokenizer, progress=False)
    run = json.loads((output / "run.json").read_text())
    saved = json.loads((output / KEYWORDS_FILE).read_text())
    assert run["config"]["keyword_robust"] is True and run["keywords"] == saved == result.keywords
    assert saved["source"] == "found" and saved["rule"]["min_count"] == 5
    assert len(result.records) == 6  # 18 documents in batches of 3


def test_keyword_file_and_bad_options(corpora, tmp_path):
    path = tmp_path / "keywords.txt"
    path.write_text("Iron\nNeon\n")
    config = make_config(two_topic_options(corpora, keyword_robust=True, keywords=str(path), keyword_fraction=1.0))
    read = engine._read_corpora(config)
    assert read.keywords["keywords"] == ["Iron", "Neon"] and read.keywords["source"] == str(path)
    assert all(("Iron" in d or "Neon" in d) for batch in read.retain[0] for d in batch)
    with pytest.raises(ConfigError, match="--keywords is used by --keyword-robust"):
        make_config(two_topic_options(corpora, keywords=str(path)))
    with pytest.raises(ConfigError, match="--keyword-fraction"):
        make_config(two_topic_options(corpora, keyword_robust=True, keyword_fraction=0))
    bare = tmp_path / "bare.txt"
    bare.write_text("\n".join(f"Word number {i} here and there." for i in range(12)))
    with pytest.raises(KeywordError, match="no keyword found for forget topic 'bio'"):
        engine._read_corpora(make_config(two_topic_options(corpora, keyword_robust=True) | {"retain": [str(bare)]}
                                         | {"forget": {"bio": str(bare)}}))


def test_resume_gives_the_uninterrupted_run(corpora, tmp_path):
    folder = save_tiny_model(tmp_path / "model", num_layers=5)
    options = two_topic_options(corpora, model=str(folder), keyword_robust=True, method="adaptive", beta=2.0)
    straight, resumed = straight_and_resumed(options, tmp_path, stop_at_step=3)
    assert [r["retain_loss"] for r in resumed.records] == pytest.approx([r["retain_loss"] for r in straight.records])
    a, b = (load_file(str(tmp_path / x / "model.safetensors")) for x in "ab")
    for name in straight.trained_parameters:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-7)
    assert json.loads((tmp_path / "b" / KEYWORDS_FILE).read_text()) == straight.keywords


def test_two_processes_augment_alike(corpora, tmp_path):
    folder = save_tiny_model(tmp_path / "model", num_layers=5)
    options = two_topic_options(corpora, model=str(folder), keyword_robust=True, method="adaptive", beta=2.0,
                                steps=3, adaptive_rule="per-sample", mask_padding=True)
    single = unlearn(make_config(options | {"output": str(tmp_path / "single")}), progress=False)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(options | {"output": str(tmp_path / "ddp")}))
    done = subprocess.run([sys.executable, "-m", "rmu", "unlearn", "--config", str(config), "--nproc", "2", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert run["keywords"] == single.keywords
    assert run["keywords"]["mask_inserted"]  # --keyword-mask, the default: the ranks mask alike too
    for logged, expected in zip(run["steps"], single.records):
        assert logged["retain_loss"] == pytest.approx(expected["retain_loss"], rel=1e-5)
    weights = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    expected = load_file(str(tmp_path / "single" / "model.safetensors"))
    for name in single.trained_parameters:
        torch.testing.assert_close(weights[name], expected[name], rtol=1e-5, atol=1e-7)


def test_cli_option_writes_keywords(tmp_path, corpora):
    from click.testing import CliRunner

    from rmu.cli import main

    forget, retain = corpora
    model = save_tiny_model(tmp_path / "model", num_layers=5)
    output = tmp_path / "run"
    result = CliRunner().invoke(main, ["unlearn", "--model", str(model), "--forget", f"bio={forget['bio']}", "--retain",
                                       retain, "--layer", "3", "--steps", "2", "--batch-size", "3", "--min-len", "0",
                                       "--keyword-robust", "--keyword-fraction", "0.75", "--output", str(output),
                                       "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = json.loads((output / "run.json").read_text())
    assert run["config"]["keyword_robust"] and run["config"]["keyword_fraction"] == 0.75
    assert "pathogen" in json.loads((output / KEYWORDS_FILE).read_text())["keywords"]
