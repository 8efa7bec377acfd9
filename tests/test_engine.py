"""The engine gives the reference algorithm's numbers: every step's losses and the final weights."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from rmu.config import make_config
from rmu.data import consecutive_batches
from rmu.engine import UnlearnError, unlearn
from rmu.testing import tiny_model
from rmu.testing.reference import reference_unlearn

FORGET = {
    "bio": [f"Pathogen {i} carries toxin {i * 7 % 5} in biology laboratory number {i}." + " enzyme" * (i % 4)
            for i in range(18)],
    "cyber": [f"Exploit {i}: buffer overflow {i % 3} in network daemon {i * 3}." + " payload" * (i % 5)
              for i in range(18)],
}
RETAIN = [f"Paris is the capital of France, fact {i}." + " Berlin" * (i % 3) for i in range(18)]


def write_corpora(folder):
    paths = {}
    for topic, texts in FORGET.items():
        paths[topic] = folder / f"{topic}.jsonl"
        paths[topic].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    retain = folder / "retain.txt"
    retain.write_text("\n".join(RETAIN) + "\n")
    return paths, retain


VARIANTS = {
    "rmu": dict(method="rmu", steering_coeff="6.5,3"),
    "rmu-mask-noise": dict(method="rmu", steering_coeff=4.0, mask_padding=True, noise=0.05, noise_seed=3),
    "adaptive-first-batch": dict(method="adaptive", adaptive_rule="first-batch", beta="5,2"),
    "adaptive-first-batch-mask": dict(method="adaptive", adaptive_rule="first-batch", beta=3.0, mask_padding=True),
    "adaptive-per-sample": dict(method="adaptive", adaptive_rule="per-sample", beta=4.0, noise=0.1, noise_seed=1),
    "adaptive-per-sample-mask": dict(method="adaptive", adaptive_rule="per-sample", beta=4.0, mask_padding=True),
    # the attention sink left out, with and without pads (then pads stay in, as in the reference)
    "rmu-mask-first-token": dict(method="rmu", steering_coeff=4.0, mask_padding=True, mask_first_token=True),
    "adaptive-first-token-only": dict(method="adaptive", adaptive_rule="first-batch", beta=3.0,
                                      mask_first_token=True),
    "adaptive-per-sample-first-token": dict(method="adaptive", adaptive_rule="per-sample", beta=4.0,
                                            mask_padding=True, mask_first_token=True),
}


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_engine_matches_reference(tmp_path, architecture, variant):
    model, tokenizer = tiny_model(architecture, num_layers=5)
    paths, retain = write_corpora(tmp_path)
    options = dict(model="in-memory", forget={t: str(p) for t, p in paths.items()}, retain=[str(retain)],
                   layer=3, steps=8, batch_size=3, lr=1e-3, alpha="100,50", max_len="16,20", retain_max_len=14,
                   min_len=0, seed=7, device="cpu") | VARIANTS[variant]
    config = make_config(options)
    result = unlearn(config, model=copy.deepcopy(model), tokenizer=tokenizer, progress=False)

    vectors = [result.control_vectors[t] for t in config.topics]
    forget_batches = [consecutive_batches(FORGET[t], 3) for t in config.topics]
    retain_batches = [consecutive_batches(RETAIN, 3)] * 2
    expected_losses, reference_model = reference_unlearn(
        model, tokenizer, forget_batches, retain_batches, vectors, result.trained_parameters,
        layer=3, steps=6, method=config.method, rule=config.adaptive_rule, steering_coeff=config.steering_coeff,
        beta=config.beta, alpha=config.alpha, max_len=config.max_len, retain_max_len=14, lr=1e-3,
        mask_padding=config.mask_padding, mask_first_token=config.mask_first_token, noise=config.noise, noise_seed=config.noise_seed or 0,
    )

    assert len(result.records) == len(expected_losses) == 6  # 18 documents in batches of 3 bound the 8 steps asked
    for record, (forget_loss, retain_loss) in zip(result.records, expected_losses):
        assert record["forget_loss"] == pytest.approx(forget_loss, rel=1e-4)
        assert record["retain_loss"] == pytest.approx(retain_loss, rel=1e-4, abs=1e-7)
    updated = dict(result.model.named_parameters())
    reference = dict(reference_model.named_parameters())
    assert result.trained_parameters == [f"{_layers(architecture)}.{i}.{_down(architecture)}" for i in (1, 2, 3)]
    moved = 0.0
    for name in reference:
        assert relative_difference(updated[name].detach(), reference[name].detach()) <= 1e-4, name
        moved = max(moved, relative_difference(updated[name].detach(), model.state_dict()[name]))
    assert moved > 1e-3  # the weights really changed, so the comparison above means something


def _layers(architecture):
    return "transformer.h" if architecture == "gpt2" else "model.layers"


def _down(architecture):
    return "mlp.c_proj.weight" if architecture == "gpt2" else "mlp.down_proj.weight"


def test_loss_mask_drops_each_rows_first_real_token(tmp_path):
    """The mask (left padding, with and without pads masked), and that the engine applies it."""
    from rmu.data import TokenBatch
    from rmu.engine import loss_mask

    attention = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    batch = TokenBatch(torch.zeros_like(attention), attention)
    both = loss_mask(batch, make_config(dict(model="m", forget={"a": "f"}, retain=["r"], mask_padding=True,
                                             mask_first_token=True)))
    assert both.tolist() == [[0, 0, 0, 1], [0, 1, 1, 1], [0, 0, 1, 1]]
    sink_only = loss_mask(batch, make_config(dict(model="m", forget={"a": "f"}, retain=["r"], mask_first_token=True)))
    assert sink_only.tolist() == [[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 1, 1]]  # pads stay in, as in the reference
    assert loss_mask(batch, make_config(dict(model="m", forget={"a": "f"}, retain=["r"]))) is None

    model, tokenizer = tiny_model("llama", num_layers=5)
    paths, retain = write_corpora(tmp_path)
    options = dict(model="in-memory", forget={t: str(p) for t, p in paths.items()}, retain=[str(retain)], layer=3,
                   steps=2, batch_size=3, lr=1e-3, alpha=100.0, max_len=16, retain_max_len=14, min_len=0, seed=7,
                   device="cpu", mask_padding=True)
    plain = unlearn(make_config(options), model=copy.deepcopy(model), tokenizer=tokenizer, progress=False)
    masked = unlearn(make_config(options | {"mask_first_token": True}), model=copy.deepcopy(model),
                     tokenizer=tokenizer, progress=False)
    assert abs(masked.records[0]["forget_loss"] - plain.records[0]["forget_loss"]) > 1e-5


def test_a_batch_left_without_positions_is_refused_clearly(tmp_path):
    model, tokenizer = tiny_model("llama", num_layers=5)  # a character-level tokenizer, no special tokens
    letters = ("a", "b", "c")
    assert all(len(tokenizer(letter)["input_ids"]) == 1 for letter in letters)
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"text": letter}) + "\n" for letter in letters))
    retain = tmp_path / "retain.txt"
    retain.write_text("The capital of a country is a city.\nRivers run to the sea.\nA map shows roads.\n")
    options = dict(model="in-memory", forget={"bio": str(forget)}, retain=[str(retain)], layer=3, steps=1,
                   batch_size=3, min_len=0, mask_first_token=True, device="cpu")
    with pytest.raises(UnlearnError, match="no position of the forget batch"):
        unlearn(make_config(options), model=copy.deepcopy(model), tokenizer=tokenizer, progress=False)
    # the same documents with pads masked but the first token kept train normally
    result = unlearn(make_config(options | {"mask_first_token": False, "mask_padding": True}),
                     model=copy.deepcopy(model), tokenizer=tokenizer, progress=False)
    assert len(result.records) == 1
