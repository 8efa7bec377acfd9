"""``--loss-dims informative`` (issue #11): the losses, u, the scale rule and the health report on the
layer-l dimensions that are not massive; ``all`` (the default) is the engine as before."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import straight_and_resumed, unlearn_options, write_workspace
from rmu import scale
from rmu.cli import main
from rmu.config import make_config
from rmu.engine import unlearn
from rmu.losses import informative_dims, informative_vector, masked_mse, select_dims
from rmu.runner import LayerRunner
from rmu.structure import find_structure
from rmu.testing import save_tiny_model, tiny_model

PLANTED = 5  # the dimension every token's embedding carries a huge constant in


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_workspace(tmp_path_factory.mktemp("loss-dims"), "elements", layers=None, lines=16)


def options(corpora, **extra):
    return dict(model="unused", forget={"f": str(corpora / "forget.jsonl")}, retain=[str(corpora / "retain.txt")],
                layer=2, steps=6, batch_size=2, lr=5e-3, alpha=10.0, min_len=0, max_len=32, retain_max_len=32,
                device="cpu", method="adaptive", beta=2.0, seed=1, mask_padding=True) | extra


def planted_model(value: float = 300.0):
    model, tokenizer = tiny_model("llama", num_layers=4)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, PLANTED] = value
    return model, tokenizer


def run(corpora, model_and_tokenizer, **extra):
    model, tokenizer = model_and_tokenizer
    return unlearn(make_config(options(corpora, **extra)), model=model, tokenizer=tokenizer, progress=False)


# ---- the arithmetic ------------------------------------------------------------------------------

def test_masked_loss_and_target_ignore_a_planted_massive_dimension():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 8, generator=generator)
    hidden[..., 3] = 1e4  # nearly constant and huge at every token
    real = torch.ones(2, 5, dtype=torch.bool)
    massive = scale.massive_activations(hidden, real)
    assert massive.dims == [3]
    dims = informative_dims(8, massive.dims)
    assert dims.tolist() == [0, 1, 2, 4, 5, 6, 7]
    u = torch.rand(8, generator=generator)
    u = u / u.norm()
    u_informative = informative_vector(u, dims)
    assert u_informative.shape == (7,) and u_informative.norm().item() == pytest.approx(1.0)
    assert torch.allclose(u_informative, u[dims] / u[dims].norm())
    coefficient = 2 * float(select_dims(hidden, dims).norm(dim=-1).mean())
    loss = masked_mse(select_dims(hidden, dims), coefficient * u_informative, None)
    expected = ((hidden[..., [0, 1, 2, 4, 5, 6, 7]] - coefficient * u_informative) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    moved = hidden.clone()
    moved[..., 3] = -5e3  # the massive dimension changes: the informative loss does not
    assert masked_mse(select_dims(moved, dims), coefficient * u_informative, None).item() == loss.item()
    assert masked_mse(moved, coefficient * u, None).item() != masked_mse(hidden, coefficient * u, None).item()


def test_all_dimensions_leave_tensors_untouched():
    hidden, u = torch.randn(2, 3, 4), torch.rand(4)
    assert select_dims(hidden, None) is hidden and informative_vector(u, None) is u
    with pytest.raises(ValueError, match="every one"):
        informative_dims(3, [0, 1, 2])


# ---- the engine ----------------------------------------------------------------------------------

def test_default_is_all_and_informative_without_massive_dimensions_changes_nothing(tiny, corpora):
    assert make_config(options(corpora)).loss_dims == "all"
    plain = run(corpora, tiny)
    plain.restore_original()
    informative = run(corpora, tiny, loss_dims="informative")
    informative.restore_original()
    assert informative.loss_dims["massive_dims"] == {"f": []}  # the random tiny model has none
    assert plain.loss_dims is None
    for a, b in zip(plain.records, informative.records):
        # the same dimensions in the same order; u renormalised over all of them differs by rounding only
        assert a["forget_loss"] == pytest.approx(b["forget_loss"], rel=1e-5)
        assert a["retain_loss"] == pytest.approx(b["retain_loss"], rel=1e-5, abs=1e-9)


def test_informative_losses_leave_out_the_planted_dimension(corpora):
    model, tokenizer = planted_model()
    result = run(corpora, (model, tokenizer), loss_dims="informative", steps=1, lr=1e-12)
    assert result.loss_dims["massive_dims"] == {"f": [PLANTED]}
    assert result.loss_dims["informative_dims"] == {"f": 63}
    # the first step's forget loss is the MSE over the 63 other dimensions to beta x their norm x u there
    config = result.config
    structure = find_structure(model)
    runner = LayerRunner(model, structure, config.update_layers[0], config.layer, {}, False)
    from rmu.data import tokenize
    from rmu.engine import _read_corpora
    from rmu.losses import loss_mask

    batch = tokenize(tokenizer, _read_corpora(config).forget[0][0], config.max_len[0])
    hidden = runner.frozen(batch).output.float()
    mask = loss_mask(batch, config)
    dims = informative_dims(64, [PLANTED])
    other = select_dims(hidden, dims)
    norm = float((other.norm(dim=-1) * mask).sum(dim=1).div(mask.sum(dim=1)).mean())
    assert result.coefficients["f"] == pytest.approx(2.0 * norm, rel=1e-5)
    u = informative_vector(result.control_vectors["f"], dims)
    expected = masked_mse(other, result.coefficients["f"] * u, mask)
    assert result.records[0]["forget_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert result.records[0]["frozen_forget_norm"] == pytest.approx(norm, rel=1e-5)
    # with every dimension the planted 300 dominates the norm, the coefficient and the loss
    every = run(corpora, planted_model(), steps=1, lr=1e-12)
    assert every.coefficients["f"] > 50 * result.coefficients["f"]


@pytest.mark.parametrize("loss_dims, forget_width, retain_width",
                         [("all", 64, 64), ("informative", 63, 63), ("forget-informative", 63, 64)])
def test_each_loss_sees_the_dimensions_its_setting_names(corpora, monkeypatch, loss_dims, forget_width, retain_width):
    import rmu.engine

    widths = []

    def recording(prediction, target, mask, in_model_dtype=False):
        widths.append((prediction.shape[-1], target.shape[-1]))
        return masked_mse(prediction, target, mask, in_model_dtype)

    monkeypatch.setattr(rmu.engine, "masked_mse", recording)
    result = run(corpora, planted_model(), loss_dims=loss_dims, steps=2)
    assert widths == [(forget_width, forget_width), (retain_width, retain_width)] * 2  # forget, retain per step
    assert result.health["topics"][0]["loss_dims"] == loss_dims


def test_the_scale_rule_and_health_measure_the_informative_part(corpora):
    informative = run(corpora, planted_model(), loss_dims="informative", auto="all")
    topic = informative.calibration["topics"][0]
    assert informative.calibration["loss_dims"] == "informative"
    assert topic["massive_dims"] == [PLANTED] and topic["massive_share"] > 0.9
    # N is the norm without the planted dimension, c = 2N, and the run's coefficient is that c
    assert topic["forget_norm"] == pytest.approx(topic["informative_norm"], rel=1e-3)
    assert topic["coefficient"] == pytest.approx(2 * topic["forget_norm"], rel=1e-3)
    assert informative.coefficients["f"] == pytest.approx(topic["coefficient"], rel=1e-4)  # run.json: 5 digits
    assert informative.loss_dims["massive_dims"] == {"f": [PLANTED]}  # taken from the calibration
    health = informative.health["topics"][0]
    assert health["loss_dims"] == "informative" and health["retain_drift_all_dims"] is not None
    assert health["frozen_forget_norm"] == pytest.approx(topic["forget_norm"], rel=0.5)
    codes = {w["code"] for w in informative.health["warnings"]}
    assert "massive-activations" not in codes

    every = run(corpora, planted_model(), auto="all")
    assert every.calibration["topics"][0]["forget_norm"] > 50 * topic["forget_norm"]
    assert every.health["topics"][0]["loss_dims"] == "all" and every.health["topics"][0]["retain_drift_all_dims"] is None
    warning = [w for w in every.health["warnings"] if w["code"] == "massive-activations"]
    assert warning and "--loss-dims informative" in warning[0]["message"]


def test_resume_with_informative_dimensions(tmp_path):
    folder = write_workspace(tmp_path / "ws", layers=4)
    save_tiny_model(folder / "model", "llama", num_layers=4)
    from safetensors.torch import load_file, save_file

    weights_file = next((folder / "model").glob("*.safetensors"))
    weights = load_file(str(weights_file))
    key = next(k for k in weights if k.endswith("embed_tokens.weight"))
    weights[key][:, PLANTED] = 300.0
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    values = unlearn_options(folder, layer=2, method="adaptive", beta=2.0, loss_dims="informative",
                             mask_padding=True)
    straight, resumed = straight_and_resumed(values, tmp_path / "runs", stop_at_step=3)
    assert [r["forget_loss"] for r in resumed.records] == [r["forget_loss"] for r in straight.records]
    assert resumed.loss_dims == straight.loss_dims and straight.loss_dims["massive_dims"] == {"bio": [PLANTED]}
    run_json = json.loads((tmp_path / "runs" / "b" / "run.json").read_text())
    assert run_json["config"]["loss_dims"] == "informative"
    assert run_json["loss_dims"]["massive_dims"] == {"bio": [PLANTED]}
    for name, value in straight.final_weights.items():
        assert torch.equal(value, resumed.final_weights[name])
    # a resume with the other setting is refused: the option is part of the run's fingerprint
    from conftest import StopRun
    from rmu.errors import RmuError

    def stop(record):
        if record["step"] == 3:
            raise StopRun

    interrupted = values | {"output": str(tmp_path / "runs" / "c"), "save_every": 2}
    with pytest.raises(StopRun):
        unlearn(make_config(interrupted), callbacks=(stop,), progress=False)
    with pytest.raises(RmuError, match="loss-dims"):
        unlearn(make_config(interrupted | {"resume": True, "loss_dims": "all"}), progress=False)


# ---- the CLI -------------------------------------------------------------------------------------

def test_cli_round_trip(tmp_path):
    folder = write_workspace(tmp_path / "ws", layers=4)
    common = ["--model", str(folder / "model"), "--forget", f"bio={folder / 'bio.jsonl'}",
              "--retain", str(folder / "retain.txt"), "--layer", "2", "--steps", "2", "--batch-size", "2",
              "--max-len", "32", "--retain-max-len", "32", "--device", "cpu", "--quiet"]
    runner = CliRunner()
    first = runner.invoke(main, ["unlearn", *common, "--loss-dims", "informative", "--output", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    config = json.loads((tmp_path / "a" / "run.json").read_text())["config"]
    assert config["loss_dims"] == "informative"
    (tmp_path / "again.yaml").write_text(json.dumps(config | {"output": str(tmp_path / "b")}))
    second = runner.invoke(main, ["unlearn", "--config", str(tmp_path / "again.yaml"), "--quiet"])
    assert second.exit_code == 0, second.output
    assert json.loads((tmp_path / "b" / "run.json").read_text())["config"]["loss_dims"] == "informative"
    bad = runner.invoke(main, ["unlearn", *common, "--loss-dims", "massive", "--output", str(tmp_path / "c")])
    assert bad.exit_code != 0 and "--loss-dims" in bad.output
    for command in (["sweep", "layers"], ["sweep", "coeff"], ["tune"]):
        assert "--loss-dims" in runner.invoke(main, [*command, "--help"]).output
