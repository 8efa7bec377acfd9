"""``--recipe wmdp-rmu`` / ``adaptive-rmu`` give the published scripts' numbers.

The scripts are transcribed independently of the engine in tests/original_wmdp.py and
tests/original_adaptive.py (two full models, hooks, the legacy AdamW written out, train mode, the
original data reading). Both sides get the same tiny random model, a tokenizer whose own pad token
is not EOS (the recipe must force pad = EOS), and WMDP-shaped corpora: ``bio-forget-corpus.jsonl``
with a "text" field, ``cyber-forget-corpus.jsonl`` that the scripts read as raw JSON lines, and a
wikitext-like retain file with headings, short rows and empty rows. Long documents make the
512 (first topic) / 768 (other topics) / 512 (retain) truncation matter.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from rmu.cli import main
from rmu.config import make_config
from rmu.data import read_corpus_as_published
from rmu.engine import unlearn
from rmu.optim import LegacyAdamW
from rmu.testing import save_tiny_model, tiny_model

from conftest import straight_and_resumed
from original_adaptive import run_adaptive_rmu
from original_wmdp import corpus_batches, run_rmu

LAYER = 3  # of 5: the recipe's updated layers follow it, 1..3
STEPS = 8
LR = 1e-3  # the recipes' 5e-5 barely moves a random 64-wide model in 8 steps; the arithmetic is the same

# Measured (python -m pytest -q -s tests/test_recipes.py prints them): 0.0 for both, in float32
# AND in bfloat16 on CPU: the engine runs the same operations on the same shapes in the same order
# as the scripts, so even bfloat16 rounding agrees bit for bit. The float32 bounds are the issue's;
# the bfloat16 ones leave room for kernels that round differently elsewhere, and are still below
# every single switch's effect (0.014-0.24 when one of loss dtype, master copies or draw differs).
TOLERANCE = {
    torch.float32: dict(loss=1e-4, update=2e-4),
    torch.bfloat16: dict(loss=1e-3, update=1e-2),
}


def _wikitext_rows():
    rows = ["", " = Valkyria Chronicles = \n", "", " A\n", " = = Gameplay = = \n", ""]
    for i in range(36):
        body = f" The capital of country {i} is city {i * 3}, on river {i % 5}."
        rows.append(body + (" It is a large and old city ." * 20 if i % 9 == 4 else "") + " \n")
        if i % 7 == 0:
            rows.extend(["", f" = = Section {i} = = \n", ""])
    return rows


def write_wmdp_corpora(folder):
    bio = folder / "bio-forget-corpus.jsonl"
    bio.write_text("".join(
        json.dumps({"title": f"paper {i}", "text": f"Pathogen {i} carries toxin {i % 5} in lab {i}."
                    + (" The enzyme binds the receptor." * 25 if i % 11 == 3 else "")}) + "\n"
        for i in range(34)))
    cyber = folder / "cyber-forget-corpus.jsonl"
    cyber.write_text("".join(
        json.dumps({"text": f"Exploit {i}: overflow {i % 3} in daemon {i * 3}."
                    + (" The payload jumps to the shellcode." * 26 if i % 13 == 5 else "")}) + "\n"
        for i in range(34)))
    retain = folder / "wikitext.jsonl"
    retain.write_text("".join(json.dumps({"text": row}) + "\n" for row in _wikitext_rows()))
    return bio, cyber, retain


def model_and_tokenizer(architecture, dtype):
    model, tokenizer = tiny_model(architecture, num_layers=5)
    model.config.max_position_embeddings = 1024  # rotary models: room for the 768-token topic
    tokenizer.add_special_tokens({"pad_token": "<pad>"})  # its own pad; the recipes force EOS
    return model.to(dtype), tokenizer


def relative(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def run_both(tmp_path, architecture, dtype, recipe):
    model, tokenizer = model_and_tokenizer(architecture, dtype)
    bio, cyber, retain = write_wmdp_corpora(tmp_path)
    config = make_config(dict(recipe=recipe, model="in-memory", forget={"bio": str(bio), "cyber": str(cyber)},
                              retain=[str(retain)], layer=LAYER, steps=STEPS, lr=LR, device="cpu",
                              output=str(tmp_path / "run")))
    result = unlearn(config, model=copy.deepcopy(model), tokenizer=copy.deepcopy(tokenizer), progress=False)

    forget_data = [corpus_batches(bio, 0, 4), corpus_batches(cyber, 0, 4)]
    retain_data = [corpus_batches(retain, 0, 4, wikitext_rows=True)] * 2
    updated, frozen = copy.deepcopy(model), copy.deepcopy(model)
    common = dict(layer_id=LAYER, layer_ids=[LAYER - 2, LAYER - 1, LAYER], alpha=[1200.0, 1200.0], lr=LR,
                  max_num_batches=STEPS, seed=42)
    if recipe == "wmdp-rmu":
        losses, names, vectors = run_rmu(updated, frozen, copy.deepcopy(tokenizer), forget_data, retain_data,
                                         steering_coeffs=[6.5, 6.5], **common)
        coefficients = None
    else:
        losses, coefficients, names = run_adaptive_rmu(updated, frozen, copy.deepcopy(tokenizer), forget_data,
                                                       retain_data, scale=5.0, **common)
    return model, result, updated, losses, names, coefficients


def differences(model, result, reference_model, losses, names):
    """Largest relative loss difference, and largest weight difference relative to the reference update."""
    assert result.trained_parameters == names
    assert len(result.records) == len(losses) == STEPS
    loss_gap = max(abs(r[key] - expected) / max(abs(expected), 1e-12)
                   for r, pair in zip(result.records, losses)
                   for key, expected in zip(("forget_loss", "retain_loss"), pair))
    ours, theirs, start = dict(result.model.named_parameters()), dict(reference_model.named_parameters()), \
        dict(model.named_parameters())
    update_gap, moved = 0.0, 0.0
    for name in names:
        update = theirs[name].detach().float() - start[name].detach().float()
        moved = max(moved, update.norm().item() / start[name].float().norm().item())
        update_gap = max(update_gap, ((ours[name].detach().float() - theirs[name].detach().float()).norm()
                                      / update.norm()).item())
    assert moved > 1e-4  # the weights really moved, so comparing them means something
    return loss_gap, update_gap


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("architecture", ["llama", "mistral"])
@pytest.mark.parametrize("recipe", ["wmdp-rmu", "adaptive-rmu"])
def test_recipe_equals_the_published_script(tmp_path, recipe, architecture, dtype):
    model, result, reference_model, losses, names, coefficients = run_both(tmp_path, architecture, dtype, recipe)
    loss_gap, update_gap = differences(model, result, reference_model, losses, names)
    print(f"{recipe} {architecture} {dtype}: loss {loss_gap:.2e} update {update_gap:.2e}")
    assert loss_gap <= TOLERANCE[dtype]["loss"]
    assert update_gap <= TOLERANCE[dtype]["update"]
    if coefficients is not None:  # Adaptive: taken from the updated model at steps 0 and 1
        for index, topic in enumerate(("bio", "cyber")):
            assert result.coefficients[topic] == pytest.approx(coefficients[index], rel=1e-6)
    # The control vectors the run saved are the published draw from the seed, in the model's dtype.
    saved = load_file(str(tmp_path / "run" / "control_vectors.safetensors"))
    torch.manual_seed(42)
    for topic in ("bio", "cyber"):
        draw = torch.rand(1, 1, model.config.hidden_size, dtype=dtype)
        assert torch.equal(saved[topic].to(dtype), (draw / torch.norm(draw)).reshape(-1))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["recipe"] == recipe and run["config"]["optimizer"] == "adamw-legacy"
    assert run["config"]["max_len"] == [512, 768] and run["config"]["update_layers"] == [1, 2, 3]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_rna_recipe_equals_the_noise_script(tmp_path, dtype):
    """llmu-robustness's RMU: WMDP's script plus randn_like noise from torch's global generator."""
    model, tokenizer = model_and_tokenizer("llama", dtype)
    bio, cyber, retain = write_wmdp_corpora(tmp_path)
    config = make_config(dict(recipe="rna", noise=0.05, model="in-memory", forget={"bio": str(bio),
                              "cyber": str(cyber)}, retain=[str(retain)], layer=LAYER, steps=STEPS, lr=LR,
                              device="cpu"))
    assert config.min_len == 4  # the script passes the batch size where get_data takes min_len
    result = unlearn(config, model=copy.deepcopy(model), tokenizer=copy.deepcopy(tokenizer), progress=False)
    forget_data = [corpus_batches(bio, 4, 4), corpus_batches(cyber, 4, 4)]
    retain_data = [corpus_batches(retain, 4, 4, wikitext_rows=True)] * 2
    reference_model = copy.deepcopy(model)
    losses, names, _ = run_rmu(reference_model, copy.deepcopy(model), copy.deepcopy(tokenizer), forget_data,
                               retain_data, layer_id=LAYER, layer_ids=[LAYER - 2, LAYER - 1, LAYER],
                               steering_coeffs=[6.5, 6.5], alpha=[1200.0, 1200.0], lr=LR, max_num_batches=STEPS,
                               seed=42, nu=0.05)
    loss_gap, update_gap = differences(model, result, reference_model, losses, names)
    print(f"rna llama {dtype}: loss {loss_gap:.2e} update {update_gap:.2e}")
    assert loss_gap <= TOLERANCE[dtype]["loss"] and update_gap <= TOLERANCE[dtype]["update"]


def test_the_read_corpora_are_the_scripts(tmp_path):
    bio, cyber, retain = write_wmdp_corpora(tmp_path)
    cyber_lines = cyber.read_text().splitlines(keepends=True)
    assert read_corpus_as_published(str(cyber), 0, forget=True) == cyber_lines  # raw JSON lines, newline kept
    assert read_corpus_as_published(str(bio), 0, forget=True)[0] == "Pathogen 0 carries toxin 0 in lab 0."
    rows = read_corpus_as_published(str(retain), 0, forget=False)
    assert rows == [r for r in _wikitext_rows() if len(r) > 0]  # headings and " A\n" kept, empty rows dropped
    assert [t for b in corpus_batches(retain, 3, 4, wikitext_rows=True) for t in b] == \
        read_corpus_as_published(str(retain), 3, forget=False)


def test_legacy_adamw_first_step_is_the_formula():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = LegacyAdamW([weight], lr=0.1)
    weight.grad = torch.tensor([2e-7, 1.0, -3.0])
    optimizer.step()
    b1, b2, eps = 0.9, 0.999, 1e-6
    size = 0.1 * math.sqrt(1 - b2) / (1 - b1)
    expected = 1 - size * (1 - b1) * weight.grad / ((1 - b2) ** 0.5 * weight.grad.abs() + eps)
    assert torch.allclose(weight.detach(), expected, rtol=1e-6)
    # torch's AdamW moves the tiny-gradient entry by ~lr; the legacy one by far less (eps dominates)
    assert 1 - weight[0].item() < 0.1 / 5


def test_cli_recipe_layer_overrides_and_rmu_recipes(tmp_path):
    folder = save_tiny_model(tmp_path / "model", "llama", num_layers=4)
    bio, cyber, retain = write_wmdp_corpora(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["unlearn", "--recipe", "wmdp-rmu", "--model", str(folder), "--forget",
                                  f"bio={bio}", "--forget", f"cyber={cyber}", "--retain", str(retain), "--layer",
                                  "2", "--steps", "3", "--lr", "1e-3", "--verbose-metrics", "--device", "cpu",
                                  "--output", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    config = run["config"]
    assert config["update_layers"] == [0, 1, 2] and config["lr"] == 1e-3 and config["steps"] == 3
    assert config["min_len"] == 0 and config["loss_dtype"] == "model" and config["train_mode"] is True
    first, last = run["steps"][0], run["steps"][-1]
    # before the first update the two models agree (cosines average pads too, as the scripts': a pad's
    # hidden state is 0 in this tiny model, its cosine 0, so they are below 1 even then)
    assert first["verbose_updated_forget_norm"] == pytest.approx(first["verbose_frozen_forget_norm"], rel=1e-6)
    assert first["verbose_updated_retain_norm"] == pytest.approx(first["verbose_frozen_retain_norm"], rel=1e-6)
    assert all(0 < s["verbose_retain_cosine"] <= 1 + 1e-6 and 0 < s["verbose_forget_cosine"] <= 1 + 1e-6 for s in (first, last))

    listing = runner.invoke(main, ["recipes"])
    assert listing.exit_code == 0
    for expected in ("wmdp-rmu", "adaptive-rmu", "rna", "adamw-legacy", "rmu/unlearn.py:26", "adap_rmu.sh:18"):
        assert expected in listing.output
    refused = runner.invoke(main, ["unlearn", "--recipe", "rna", "--model", str(folder), "--forget", str(bio),
                                   "--retain", str(retain)])
    assert refused.exit_code != 0 and "needs --noise" in refused.output


def test_a_resumed_recipe_run_reaches_the_uninterrupted_weights(tmp_path):
    """Legacy optimizer state and the Adaptive coefficients taken during the run survive a resume."""
    folder = save_tiny_model(tmp_path / "model", "llama", num_layers=4)
    bio, cyber, retain = write_wmdp_corpora(tmp_path)
    options = dict(recipe="adaptive-rmu", model=str(folder), forget={"bio": str(bio), "cyber": str(cyber)},
                   retain=[str(retain)], layer=2, steps=7, lr=1e-3, device="cpu")
    straight, resumed = straight_and_resumed(options, tmp_path, stop_at_step=4)
    assert resumed.coefficients == straight.coefficients
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    for name in straight.trained_parameters:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-7)
