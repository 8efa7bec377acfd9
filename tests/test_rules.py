"""rmu.rules: control vectors (unit norm, positive orthant, seeded, saved and loaded) and the
Adaptive RMU coefficients, checked against a computation by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rmu.config import ConfigError
from rmu.rules import (
    first_batch_coefficient,
    load_control_vectors,
    per_sample_coefficients,
    random_control_vectors,
    save_control_vectors,
)

TOPICS = ["bio", "cyber"]


def test_control_vectors_are_unit_positive_and_distinct():
    vectors = random_control_vectors(TOPICS, 64, seed=3)
    assert list(vectors) == TOPICS
    for vector in vectors.values():
        assert vector.shape == (64,) and vector.dtype == torch.float32
        assert torch.allclose(vector.norm(), torch.tensor(1.0))
        assert (vector >= 0).all()
    assert not torch.equal(vectors["bio"], vectors["cyber"])


def test_control_vectors_depend_on_the_seed_only():
    state = torch.get_rng_state()  # the global generator is neither used nor moved
    first = random_control_vectors(TOPICS, 32, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    again = random_control_vectors(TOPICS, 32, seed=5)
    other = random_control_vectors(TOPICS, 32, seed=6)
    assert all(torch.equal(first[t], again[t]) for t in TOPICS)
    assert not any(torch.equal(first[t], other[t]) for t in TOPICS)


def test_save_and_load_round_trip(tmp_path):
    vectors = random_control_vectors(TOPICS, 16, seed=1)
    path = tmp_path / "control_vectors.safetensors"
    save_control_vectors(vectors, path)
    loaded = load_control_vectors(path, ["cyber"], 16)
    assert list(loaded) == ["cyber"] and torch.equal(loaded["cyber"], vectors["cyber"])
    with pytest.raises(ConfigError, match=r"no vector for topic\(s\) \['chem'\]"):
        load_control_vectors(path, ["chem"], 16)
    with pytest.raises(ConfigError, match="hidden size is 8"):
        load_control_vectors(path, TOPICS, 8)


# Two samples, three tokens, d = 2; the first sample's first token is padding.
HIDDEN = torch.tensor([[[9.0, 9.0], [3.0, 4.0], [0.0, 2.0]],
                       [[1.0, 0.0], [0.0, 1.0], [6.0, 8.0]]])
MASK = torch.tensor([[0, 1, 1], [1, 1, 1]])


def test_first_batch_coefficient_by_hand():
    # per-token norms: sample 0 -> (5, 2) over real tokens, mean 3.5; sample 1 -> (1, 1, 10), mean 4
    assert first_batch_coefficient(2.0, HIDDEN, MASK) == pytest.approx(2.0 * (3.5 + 4.0) / 2)
    # without a mask the padding counts: sample 0 -> (sqrt(162) + 5 + 2) / 3
    unmasked = ((math.sqrt(162) + 7) / 3 + 4.0) / 2
    assert first_batch_coefficient(2.0, HIDDEN, None) == pytest.approx(2.0 * unmasked)


def test_per_sample_coefficients_by_hand():
    # norm of the token-averaged state: sample 0 -> ||(1.5, 3)||, sample 1 -> ||(7/3, 3)||
    expected = torch.tensor([math.hypot(1.5, 3.0), math.hypot(7 / 3, 3.0)]) * 0.5
    assert torch.allclose(per_sample_coefficients(0.5, HIDDEN, MASK), expected)
    unmasked = torch.tensor([math.hypot(4.0, 5.0), math.hypot(7 / 3, 3.0)]) * 0.5
    assert torch.allclose(per_sample_coefficients(0.5, HIDDEN, None), unmasked)
