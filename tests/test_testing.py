"""rmu.testing on its own: the tiny models are reproducible checkpoints, and the plain reference's
loss mask and MSE mean what their docstrings say (its whole algorithm is checked against the engine in
test_engine.py)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rmu.testing import save_tiny_model, tiny_model
from rmu.testing.reference import loss_mask, mse


def test_a_seed_gives_the_same_model_and_another_seed_another():
    first, _ = tiny_model("llama", seed=0)
    again, _ = tiny_model("llama", seed=0)
    other, _ = tiny_model("llama", seed=1)
    weights = [dict(m.named_parameters()) for m in (first, again, other)]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    assert not all(torch.equal(weights[0][n], weights[2][n]) for n in weights[0])


def test_a_saved_tiny_model_loads_back_as_a_normal_checkpoint(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny", "gpt2", num_layers=2, hidden=32)
    model, tokenizer = tiny_model("gpt2", num_layers=2, hidden=32)
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert loaded.config.num_hidden_layers == 2 and loaded.config.hidden_size == 32
    assert all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in loaded.named_parameters())
    text = "Iron has the symbol Fe."
    assert loaded_tokenizer(text).input_ids == tokenizer(text).input_ids
    assert loaded_tokenizer.pad_token_id == loaded_tokenizer.eos_token_id == loaded.config.eos_token_id


def test_reference_loss_mask_drops_pads_and_first_real_tokens():
    inputs = {"attention_mask": torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])}  # left padding
    assert loss_mask(inputs, mask_padding=False, mask_first_token=False) is None
    assert loss_mask(inputs, True, False).tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert loss_mask(inputs, False, True).tolist() == [[1, 1, 0, 1], [0, 1, 1, 1]]
    assert loss_mask(inputs, True, True).tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]


def test_reference_mse_averages_over_the_kept_positions_only():
    prediction = torch.tensor([[[1.0, 1.0], [3.0, 5.0]]])  # one row, two positions, two units
    target = torch.zeros(1, 1, 2)  # broadcast over positions, as the control vector is
    assert mse(prediction, target).item() == (1 + 1 + 9 + 25) / 4
    assert mse(prediction, target, torch.tensor([[0, 1]])).item() == (9 + 25) / 2
