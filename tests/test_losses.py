"""rmu.losses on its own: the engine's loss mask and masked MSE agree with the plain reference's
(rmu.testing.reference), for left and right padding, and stay finite on a row with nothing to count."""

from __future__ import annotations

import pytest
import torch

from rmu.data import TokenBatch
from rmu.losses import loss_mask, masked_mse
from rmu.testing import reference

ATTENTION = {
    "left": torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]),
    "right": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]),
}


class Options:
    def __init__(self, mask_padding: bool, mask_first_token: bool):
        self.mask_padding, self.mask_first_token = mask_padding, mask_first_token


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("mask_padding, mask_first_token", [(False, False), (True, False), (False, True), (True, True)])
def test_mask_and_mse_agree_with_the_reference(padding, mask_padding, mask_first_token):
    attention = ATTENTION[padding]
    mask = loss_mask(TokenBatch(torch.zeros_like(attention), attention), Options(mask_padding, mask_first_token))
    expected = reference.loss_mask({"attention_mask": attention}, mask_padding, mask_first_token)
    assert (mask is None and expected is None) or torch.equal(mask, expected)
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(3, 5, 8, generator=generator)
    target = torch.randn(1, 1, 8, generator=generator)
    assert torch.allclose(masked_mse(prediction, target, mask), reference.mse(prediction, target, expected))


def test_a_fully_masked_batch_gives_zero_not_nan():
    prediction = torch.ones(2, 3, 4)
    assert masked_mse(prediction, torch.zeros(1, 1, 4), torch.zeros(2, 3, dtype=torch.long)).item() == 0.0


def test_in_model_dtype_keeps_the_prediction_dtype():
    prediction = torch.full((1, 2, 4), 1.5, dtype=torch.bfloat16)
    assert masked_mse(prediction, torch.zeros(1, 1, 4), None, in_model_dtype=True).dtype == torch.bfloat16
    assert masked_mse(prediction, torch.zeros(1, 1, 4), None).dtype == torch.float32
