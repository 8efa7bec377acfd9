"""benchmarks/keyword_robust_rule.py: its variants are valid configs, and the RMU counterpart of the tuned
Gemma/animals settings gets c = 1.3 x the layer's forget norm on the informative dimensions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import write_workspace
from rmu import scale
from rmu.config import make_config
from rmu.demo.settings import DEFAULT as DEMO
from rmu.engine import calibrate
from rmu.testing import tiny_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "keyword_robust_rule.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("keyword_robust_rule", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_workspace(tmp_path_factory.mktemp("kr-rule"), "elements", layers=None, lines=16)


def demo_config(corpora, options):
    return DEMO.unlearn_config("unused", {"animals": str(corpora / "forget.jsonl")}, [str(corpora / "retain.txt")],
                               **options)


def test_every_variant_is_a_valid_demo_config(bench, corpora):
    for name, options in bench.VARIANTS.items():
        if options is not None:
            demo_config(corpora, options)  # raises on a misspelt or ill-typed option
    assert set(bench.COEFF_RATIOS) <= {n for n, o in bench.VARIANTS.items() if o and o["method"] == "rmu"}
    tuned = make_config(dict(demo_config(corpora, bench.VARIANTS["adaptive-an-tuned+kr-mask"]).model_dump()))
    assert (tuned.layer, tuned.update_layers, tuned.steps, tuned.lr, tuned.alpha, tuned.beta, tuned.noise) == (
        7, [5, 6, 7], 57, 1.83e-3, [10.5], [1.3], 11.5)
    assert tuned.loss_dims == "informative" and tuned.mask_first_token and tuned.keyword_robust and tuned.keyword_mask


def test_rmu_counterpart_takes_c_from_the_calibrated_forget_norm(bench, corpora):
    model, tokenizer = tiny_model("llama", seed=0, num_layers=8)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = demo_config(corpora, bench.VARIANTS["rmu-an-tuned"] | {"max_len": 32, "retain_max_len": 32})
    chosen, record = bench.with_coefficient_ratio(config, 1.3, model, tokenizer)
    norm = record["measured"]["topics"][0]["forget_norm"]
    assert chosen.steering_coeff == record["steering_coeff"] == [scale.significant(1.3 * norm, 4)]
    assert record["measured"]["loss_dims"] == "informative" and chosen.auto == []  # only c is taken over
    # the norm is the one the scale rule measures on the informative dimensions: 2x it is --auto coeff's c
    auto = calibrate(config.model_copy(update={"auto": ["coeff"]}), model=model, tokenizer=tokenizer)
    assert auto["chosen"]["steering_coeff"] == [scale.significant(scale.COEFF_RATIO * norm, 4)]
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])
