"""The model card of a checkpoint written by rmu unlearn (rmu.model_card; README, "Outputs")."""

from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from rmu import model_card
from rmu.config import make_config
from rmu.engine import unlearn
from rmu.testing import save_tiny_model

BASE_CARD = "---\nlicense: apache-2.0\n---\n\n# The base model\n\nIts own card.\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short unlearning run of a tiny model whose folder carries its own README.md."""
    folder = tmp_path_factory.mktemp("card")
    save_tiny_model(folder / "model", "llama", num_layers=4)
    (folder / "model" / "README.md").write_text(BASE_CARD)
    (folder / "bio.txt").write_text("\n".join(f"Toxin {i} is made by pathogen {i % 5} in the lab." for i in range(16)))
    (folder / "retain.txt").write_text("\n".join(f"The city number {i} is a capital of a country." for i in range(16)))
    config = make_config(dict(model=str(folder / "model"), forget={"bio": str(folder / "bio.txt")},
                              retain=[str(folder / "retain.txt")], layer=2, steps=3, batch_size=2, lr=5e-3,
                              alpha=10.0, min_len=0, max_len=32, retain_max_len=32, seed=0, device="cpu",
                              output=str(folder / "out")))
    unlearn(config, progress=False)
    return folder


def test_the_checkpoint_carries_a_card_naming_base_model_method_topics_and_health(run):
    output = run / "out"
    card = ModelCard.load(output / "README.md")
    health = json.loads((output / "run.json").read_text())["health"]
    assert card.data.base_model == str(run / "model")
    assert card.data.library_name == "transformers"
    assert {"unlearning", "rmu"} <= set(card.data.tags)
    settings = card.data.to_dict()["rmu"]
    assert settings["method"] == "rmu" and settings["topics"] == ["bio"]
    assert settings["health"] == health["verdict"]
    assert settings["config"]["layer"] == 2 and settings["config"]["steps"] == 3
    assert "`bio`" in card.text and f"`{health['verdict']}`" in card.text
    assert f'from_pretrained("{output}")' in card.text


def test_the_base_models_card_is_kept_aside_not_passed_off_as_ours(run):
    output = run / "out"
    assert (output / model_card.BASE_MODEL_CARD_FILE).read_text() == BASE_CARD
    card = ModelCard.load(output / "README.md")
    assert card.text != ModelCard(BASE_CARD).text
    assert card.data.license == "apache-2.0"  # the base model's licence still applies
    assert model_card.BASE_MODEL_CARD_FILE in card.text


def test_the_checkpoint_still_loads_with_transformers(run):
    model = AutoModelForCausalLM.from_pretrained(run / "out")
    assert model.config.num_hidden_layers == 4


def test_a_card_without_a_base_card_names_no_licence_and_adaptive_gets_its_tag(run, tmp_path):
    summary = json.loads((run / "out" / "run.json").read_text())
    summary["config"]["method"] = "adaptive"
    shutil.copytree(run / "out", tmp_path / "copy")
    (tmp_path / "copy" / "README.md").unlink()
    (tmp_path / "copy" / model_card.BASE_MODEL_CARD_FILE).unlink()
    model_card.write_card(tmp_path / "copy", summary, tmp_path / "copy")
    card = ModelCard.load(tmp_path / "copy" / "README.md")
    assert "adaptive-rmu" in card.data.tags and card.data.license is None
    assert "Adaptive RMU" in card.text and "| beta |" in card.text and "| steering_coeff |" not in card.text
    assert model_card.BASE_MODEL_CARD_FILE not in card.text
    assert not (tmp_path / "copy" / model_card.BASE_MODEL_CARD_FILE).exists()
