"""Sweeps, analyses, plots and the report on tiny models: the numbers, not only the files."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import rmu.analysis.sweeps as sweeps_module
from conftest import write_workspace
from rmu import plots
from rmu.analysis import (AnalysisError, analyze_confidence, analyze_noise, analyze_norms, generated_max_logits,
                          noise_sensitivity, sweep_coeff, sweep_layers)
from rmu.analysis.common import layer_output
from rmu.cli import main
from rmu.cli.analyze import command as analyze_command
from rmu.cli.report import command as report_command
from rmu.cli.sweep import command as sweep_command
from rmu.cli.sweep import parse_int_range
from rmu.engine import unlearn
from rmu.evaluate import cloze_prompt
from rmu.report import build_report
from rmu.tasks import load_task
from rmu.testing import tiny_model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return write_workspace(tmp_path_factory.mktemp("analysis"), "elements", lines=16, questions=6)


def base_options(workspace, **extra):
    values = dict(model=str(workspace / "model"), forget={"f": str(workspace / "forget.jsonl")},
                  retain=[str(workspace / "retain.txt")], steps=4, batch_size=2, lr=5e-3, alpha=10.0, min_len=0,
                  max_len=32, retain_max_len=32, device="cpu", steering_coeff=5.0, beta=2.0, seed=1)
    return values | extra


def tasks(workspace):
    return dict(forget_tasks=[workspace / "questions.jsonl"], retain_tasks=[workspace / "questions.jsonl"])


class CountingUnlearn:
    def __init__(self):
        self.calls = []

    def __call__(self, config, **kwargs):
        self.calls.append((config.method, config.layer, config.steering_coeff, config.beta))
        return unlearn(config, **kwargs)


# ---- layer sweep ----------------------------------------------------------------------------------


def test_layer_sweep_resumes_and_restores_weights(workspace, tmp_path, monkeypatch):
    counter = CountingUnlearn()
    monkeypatch.setattr(sweeps_module, "unlearn", counter)
    model, tokenizer = tiny_model("llama", num_layers=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "sweep"
    data = sweep_layers(base_options(workspace), [2, 4], out, model=model, tokenizer=tokenizer, progress=False,
                        **tasks(workspace))
    assert len(counter.calls) == 4
    assert sorted((c[0], c[1]) for c in counter.calls) == [("adaptive", 2), ("adaptive", 4), ("rmu", 2), ("rmu", 4)]
    # The shared model holds its original weights after the sweep.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["points"] == json.loads(json.dumps(data["points"]))
    assert {(p["method"], p["layer"]) for p in saved["points"]} == {("rmu", 2), ("rmu", 4), ("adaptive", 2), ("adaptive", 4)}
    for point in saved["points"]:
        run = json.loads((out / point["run"]).read_text())
        assert run["config"]["layer"] == point["layer"] and run["config"]["update_layers"] == [
            point["layer"] - 2, point["layer"] - 1, point["layer"]]
        assert point["final_forget_loss"] == run["steps"][-1]["forget_loss"]
    # An RMU point's coefficient is c; every point's accuracies are the evaluator's on the unlearned model.
    assert next(p for p in saved["points"] if p["method"] == "rmu")["coefficients"] == {"f": 5.0}
    assert (out / "layers.png").stat().st_size > 0 and "| rmu | 2 |" in (out / "table.md").read_text()

    # Rerun with one more layer: only the two new points run.
    counter.calls.clear()
    sweep_layers(base_options(workspace), [2, 4, 5], out, model=model, tokenizer=tokenizer, progress=False,
                 **tasks(workspace))
    assert sorted((c[0], c[1]) for c in counter.calls) == [("adaptive", 5), ("rmu", 5)]
    # A rerun of a finished sweep runs nothing at all.
    counter.calls.clear()
    sweep_layers(base_options(workspace), [2, 4, 5], out, model=model, tokenizer=tokenizer, progress=False,
                 **tasks(workspace))
    assert counter.calls == []


def test_layer_sweep_point_matches_a_direct_run_and_evaluation(workspace, tmp_path):
    from rmu.config import make_config
    from rmu.evaluate import evaluate

    model, tokenizer = tiny_model("llama", num_layers=6)
    data = sweep_layers(base_options(workspace), [3], tmp_path / "s", methods=["rmu"], model=model,
                        tokenizer=tokenizer, progress=False, **tasks(workspace))
    model2, tokenizer2 = tiny_model("llama", num_layers=6)
    unlearn(make_config(base_options(workspace, layer=3)), model=model2, tokenizer=tokenizer2, progress=False)
    direct = evaluate(model2, tokenizer2, [workspace / "questions.jsonl"], scoring="cloze", progress=False)
    point = data["points"][0]
    assert point["forget_accuracy"] == pytest.approx(next(iter(direct.values())).accuracy)
    assert point["tasks"]["questions"]["accuracy"] == pytest.approx(direct["questions"].accuracy)


def test_layer_sweep_refuses_a_different_sweep_and_bad_input(workspace, tmp_path):
    model, tokenizer = tiny_model("llama", num_layers=6)
    out = tmp_path / "s"
    sweep_layers(base_options(workspace, steps=2), [2], out, methods=["rmu"], model=model, tokenizer=tokenizer,
                 progress=False, **tasks(workspace))
    with pytest.raises(AnalysisError, match="different sweep.*lr"):
        sweep_layers(base_options(workspace, steps=2, lr=1e-3), [2], out, methods=["rmu"], model=model,
                     tokenizer=tokenizer, progress=False, **tasks(workspace))
    with pytest.raises(AnalysisError, match="outside the model"):
        sweep_layers(base_options(workspace), [9], tmp_path / "t", model=model, tokenizer=tokenizer, progress=False,
                     **tasks(workspace))
    with pytest.raises(AnalysisError, match="unknown method"):
        sweep_layers(base_options(workspace), [2], tmp_path / "u", methods=["xyz"], **tasks(workspace))
    with pytest.raises(AnalysisError, match="task file not found"):
        sweep_layers(base_options(workspace), [2], tmp_path / "v", forget_tasks=[tmp_path / "none.jsonl"],
                     retain_tasks=[workspace / "questions.jsonl"])


# ---- coefficient sweep ----------------------------------------------------------------------------


def test_larger_c_gives_larger_cosine_with_u(workspace, tmp_path):
    model, tokenizer = tiny_model("llama", num_layers=6)
    # A few small Adam steps: the update's direction follows h - c*u, which turns toward u as c grows.
    options = base_options(workspace, steps=3, lr=2e-3, alpha=1.0, layer=3)
    data = sweep_coeff(options, [0.1, 0.5, 4.0], tmp_path / "c", method="rmu", model=model, tokenizer=tokenizer,
                       progress=False, **tasks(workspace))
    cosines = [p["cosine"] for p in sorted(data["points"], key=lambda p: p["value"])]
    assert cosines[0] < cosines[1] < cosines[2]
    assert data["baseline"]["cosine"] < cosines[0]
    assert -1 <= min(cosines) and max(cosines) <= 1
    # The figure draws exactly these cosines.
    figure = plots.plot_coeff_sweep(data)
    assert list(figure.axes[1].lines[0].get_ydata()) == pytest.approx(cosines)


def test_cosine_is_per_real_token_mean(workspace):
    model, tokenizer = tiny_model("llama", num_layers=4)
    from rmu.analysis.common import forget_batches, mean_cosine

    batch = forget_batches(tokenizer, ["short text here", "a much longer text with many more tokens in it"], 2, 32)[0]
    hidden = layer_output(model, 2, batch)
    u = torch.rand(hidden.shape[-1])
    total, count = mean_cosine(hidden, u, batch.attention_mask)
    expected = [torch.nn.functional.cosine_similarity(hidden[b, t], u, dim=0).item()
                for b in range(2) for t in range(hidden.shape[1]) if batch.attention_mask[b, t]]
    assert count == len(expected) == int(batch.attention_mask.sum())
    assert total / count == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    # layer_output equals the hidden state transformers reports for that layer.
    with torch.no_grad():
        states = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    real = batch.attention_mask.bool()
    assert torch.allclose(hidden[real], states.hidden_states[3][real], atol=1e-5)


# ---- confidence -----------------------------------------------------------------------------------


def test_max_logits_equal_a_direct_computation(workspace, tmp_path):
    model, tokenizer = tiny_model("llama", num_layers=4)
    task = load_task(workspace / "questions.jsonl").head(2)
    data = analyze_confidence({"base": (model, tokenizer)}, task, tmp_path / "conf", tokens=7, progress=False)
    direct = []
    for question in task.questions:
        ids = tokenizer(cloze_prompt(question), return_tensors="pt")["input_ids"]
        for _ in range(7):  # no cache: the full sequence again each time
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, -1]
            direct.append(logits.max().item())
            ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    entry = data["models"]["base"]
    assert entry["count"] == 14
    assert entry["max_logits"] == pytest.approx(direct, abs=1e-4)
    mean = sum(direct) / len(direct)
    assert entry["mean"] == pytest.approx(mean, abs=1e-4)
    assert entry["variance"] == pytest.approx(sum((d - mean) ** 2 for d in direct) / len(direct), abs=1e-4)
    saved = json.loads((tmp_path / "conf" / "confidence.json").read_text())
    assert saved["models"]["base"]["max_logits"] == pytest.approx(direct, abs=1e-4)
    assert (tmp_path / "conf" / "confidence.png").stat().st_size > 0


def test_confidence_compares_two_models_and_checks_input(workspace, tmp_path):
    base, tokenizer = tiny_model("llama", num_layers=4, seed=0)
    other, _ = tiny_model("llama", num_layers=4, seed=1)
    with torch.no_grad():
        other.lm_head.weight.mul_(0.1)  # a model whose logits are 10x smaller
    data = analyze_confidence({"base": (base, tokenizer), "scaled": (other, tokenizer)},
                              [workspace / "questions.jsonl"], tmp_path, tokens=3, limit=2, progress=False)
    assert data["models"]["scaled"]["mean"] < data["models"]["base"]["mean"]
    assert data["models"]["scaled"]["count"] == data["models"]["base"]["count"] == 6
    with pytest.raises(AnalysisError, match="tokens"):
        generated_max_logits(base, tokenizer, "Hello", tokens=0)
    with pytest.raises(AnalysisError, match="questions"):
        analyze_confidence({"base": (base, tokenizer)}, [tmp_path / "missing.jsonl"], tmp_path)


# ---- norms ----------------------------------------------------------------------------------------


def test_norm_figure_draws_run_json_values(workspace, tmp_path):
    from rmu.config import make_config

    runs = []
    for layer, method in ((2, "rmu"), (4, "adaptive")):
        out = tmp_path / f"run{layer}"
        unlearn(make_config(base_options(workspace, layer=layer, method=method, steps=6, output=str(out))),
                progress=False)
        runs.append(out)
    data = analyze_norms(runs, tmp_path / "norms")
    assert [r["layer"] for r in data["runs"]] == [2, 4]
    figure = plots.plot_norms(data)
    for ax, folder in zip(figure.axes, runs):
        steps = json.loads((folder / "run.json").read_text())["steps"]
        norm_line, coeff_line = ax.lines[0], ax.lines[1]
        assert list(norm_line.get_xdata()) == [s["step"] for s in steps]
        assert list(norm_line.get_ydata()) == [s["forget_norm"] for s in steps]
        assert list(coeff_line.get_ydata()) == [s["coeff"] for s in steps]
    assert data["runs"][0]["topics"]["f"]["coeff"] == [5.0] * 6
    assert (tmp_path / "norms" / "norms.png").stat().st_size > 0
    with pytest.raises(AnalysisError, match="not a run.json"):
        analyze_norms([tmp_path / "nowhere"])


def test_norms_read_a_sweep_folder(workspace, tmp_path):
    model, tokenizer = tiny_model("llama", num_layers=6)
    sweep_layers(base_options(workspace, steps=3), [2, 3], tmp_path / "s", methods=["rmu"], model=model,
                 tokenizer=tokenizer, progress=False, **tasks(workspace))
    data = analyze_norms([tmp_path / "s"])
    assert [r["layer"] for r in data["runs"]] == [2, 3]
    assert all(len(r["topics"]["f"]["steps"]) == 3 for r in data["runs"])


# ---- noise sensitivity ----------------------------------------------------------------------------


def test_noise_sensitivity_is_zero_without_noise_and_grows_with_noise(workspace):
    model, tokenizer = tiny_model("llama", num_layers=5)
    texts = workspace / "forget.jsonl"
    zero = noise_sensitivity(model, tokenizer, texts, scale=0.0, progress=False, max_batches=1)
    assert [r["layer"] for r in zero] == [0, 1, 2, 3]
    assert all(r["sensitivity"] == 0.0 for r in zero)
    values = [noise_sensitivity(model, tokenizer, texts, layers=[1], scale=s, progress=False, max_batches=1,
                                samples=2)[0]["sensitivity"] for s in (0.01, 0.1, 1.0)]
    assert 0 < values[0] < values[1] < values[2]


def test_noise_sensitivity_matches_a_direct_computation(workspace):
    from rmu.analysis.common import forget_batches

    model, tokenizer = tiny_model("llama", num_layers=4)
    k, scale = 1, 0.3
    result = noise_sensitivity(model, tokenizer, workspace / "forget.jsonl", layers=[k], scale=scale,
                               scale_mode="absolute", samples=1, seed=5, max_batches=1, progress=False)
    batch = forget_batches(tokenizer, workspace / "forget.jsonl", 4, 128, 1)[0]
    with torch.no_grad():
        clean = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    h_k = clean.hidden_states[k + 1]  # layer k's output: the noise has its shape, drawn as the analysis draws it
    xi = scale * torch.randn(h_k.shape, generator=torch.Generator().manual_seed(5))
    layers = model.model.layers
    # Re-run layers k+1.. by hand through a hook that replaces layer k's output with h_k + xi.
    # hidden_states[-1] has the final norm applied; read the last layer's raw output with a hook instead.
    captured = []
    hook = layers[-1].register_forward_hook(lambda m, a, o: captured.append(o[0] if isinstance(o, tuple) else o))
    handle = layers[k].register_forward_hook(lambda m, a, o: (o[0] + xi, *o[1:]) if isinstance(o, tuple) else o + xi)
    with torch.no_grad():
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    handle.remove()
    with torch.no_grad():
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    hook.remove()
    noisy_out, clean_out = captured
    ratio = (noisy_out - clean_out).pow(2).sum(-1) / clean_out.pow(2).sum(-1)
    expected = ratio[batch.attention_mask.bool()].mean().item()
    assert result[0]["sensitivity"] == pytest.approx(expected, rel=1e-4)


def test_analyze_noise_writes_results_for_two_models(workspace, tmp_path):
    base, tokenizer = tiny_model("llama", num_layers=4, seed=0)
    other, _ = tiny_model("llama", num_layers=4, seed=1)
    data = analyze_noise({"base": (base, tokenizer), "other": (other, tokenizer)}, workspace / "forget.jsonl",
                         tmp_path, layers=[0, 2], scale=0.1, samples=1, max_batches=1, progress=False)
    saved = json.loads((tmp_path / "noise.json").read_text())
    assert saved["models"]["base"]["layers"][1]["sensitivity"] == pytest.approx(
        data["models"]["base"]["layers"][1]["sensitivity"])
    figure = plots.plot_noise(data)
    assert list(figure.axes[0].lines[0].get_ydata()) == [r["sensitivity"] for r in data["models"]["base"]["layers"]]
    with pytest.raises(AnalysisError, match="outside the model"):
        noise_sensitivity(base, tokenizer, workspace / "forget.jsonl", layers=[7], progress=False)
    with pytest.raises(AnalysisError, match="scale mode"):
        noise_sensitivity(base, tokenizer, workspace / "forget.jsonl", scale_mode="weird", progress=False)


# ---- CLI and report -------------------------------------------------------------------------------


def test_cli_sweep_analyze_and_report(workspace, tmp_path):
    runner = CliRunner()
    common = ["--model", workspace / "model", "--forget", f"f={workspace / 'forget.jsonl'}", "--retain",
              workspace / "retain.txt", "--steps", 3, "--batch-size", 2, "--lr", 5e-3, "--alpha", 10, "--min-len", 0,
              "--max-len", 32, "--retain-max-len", 32, "--device", "cpu", "--forget-task", workspace / "questions.jsonl",
              "--retain-task", workspace / "questions.jsonl", "--quiet"]
    result = runner.invoke(sweep_command, ["layers", "--layers", "2-4:2", "--methods", "rmu",
                                           "--output", tmp_path / "layers", *map(str, common)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "layers" / "sweep.json").read_text())["settings"]["layers"] == [2, 4]
    result = runner.invoke(sweep_command, ["coeff", "--values", "1,4", "--layer", "3", "--output", tmp_path / "coeff",
                                           *map(str, common)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(analyze_command, ["norms", str(tmp_path / "layers"), "--output", str(tmp_path / "norms")])
    assert result.exit_code == 0, result.output
    model = str(workspace / "model")
    result = runner.invoke(analyze_command, ["confidence", "--model", f"base={model}", "--questions",
                                             str(workspace / "questions.jsonl"), "--tokens", "3", "--limit", "2",
                                             "--output", str(tmp_path / "conf"), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(analyze_command, ["noise-sensitivity", "--model", f"base={model}", "--texts",
                                             str(workspace / "forget.jsonl"), "--layers", "0-2", "--batches", "1",
                                             "--samples", "1", "--output", str(tmp_path / "noise"), "--quiet"])
    assert result.exit_code == 0, result.output
    folders = [tmp_path / n for n in ("layers", "coeff", "norms", "conf", "noise")]
    result = runner.invoke(report_command, [*map(str, folders), "--output", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "src='figures" not in page
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Layer sweep" in markdown and "Noise sensitivity" in markdown and markdown.count("![") == 5
    for line in markdown.splitlines():
        if line.startswith("!["):
            assert (tmp_path / "report" / line[line.index("(") + 1:-1]).is_file()


def test_cli_errors_are_clear(workspace, tmp_path):
    runner = CliRunner()  # through the rmu group, which prints rmu's errors
    result = runner.invoke(main, ["sweep", "layers", "--layers", "5-2", "--forget-task", "x", "--retain-task", "y",
                                  "--output", str(tmp_path / "o")])
    assert result.exit_code != 0 and "range" in result.output
    result = runner.invoke(main, ["sweep", "layers", "--layers", "2", "--forget-task", "x", "--retain-task", "y",
                                  "--output", str(tmp_path / "o")])
    assert result.exit_code != 0 and "missing --model" in result.output
    result = runner.invoke(main, ["analyze", "confidence", "--model", f"base={tmp_path / 'nope'}", "--questions", "x",
                                  "--output", str(tmp_path / "o")])
    assert result.exit_code != 0 and "not a checkpoint folder" in result.output
    result = runner.invoke(main, ["report", str(tmp_path), "--output", str(tmp_path / "r")])
    assert result.exit_code != 0 and "no result of rmu" in result.output
    assert parse_int_range("3-15:3") == [3, 6, 9, 12, 15]


def test_the_command_line_offers_every_scoring_of_the_evaluator():
    from rmu.cli.sweep import SCORINGS as offered
    from rmu.evaluate import SCORINGS

    assert set(offered) == set(SCORINGS)


def test_token_norms_match_their_definition_and_find_a_planted_sink(workspace, tmp_path):
    from rmu.analysis import analyze_token_norms, token_norms
    from rmu.analysis.common import forget_batches

    model, tokenizer = tiny_model("llama", num_layers=4, seed=0)
    texts = workspace / "forget.jsonl"
    plain = token_norms(model, tokenizer, texts, max_batches=1)
    batch = forget_batches(tokenizer, texts, 4, 128, 1)[0]
    with torch.no_grad():
        states = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       output_hidden_states=True).hidden_states
    real = batch.attention_mask.bool()
    first = batch.attention_mask.argmax(dim=1)
    norms = states[3].norm(dim=-1)  # decoder layer 2's output (not the last: that entry is after the final norm)
    sinks = norms[torch.arange(norms.shape[0]), first]
    without = real.clone()
    without[torch.arange(norms.shape[0]), first] = False
    assert plain[2]["median"] == pytest.approx(float(norms[real].median()), rel=1e-5)
    assert plain[2]["mean"] == pytest.approx(float(norms[real].mean()), rel=1e-5)
    assert plain[2]["first_token"] == pytest.approx(float(sinks.mean()), rel=1e-5)
    assert plain[2]["mean_without_first"] == pytest.approx(float(norms[without].mean()), rel=1e-5)
    assert plain[2]["max"] == pytest.approx(float(norms[real].max()), rel=1e-5)

    # A sink planted in the embeddings of each row's first real token shows at every layer.
    def plant(module, args, output):
        output = output.clone()
        output[torch.arange(output.shape[0]), first] *= 1000
        return output

    handle = model.get_input_embeddings().register_forward_hook(plant)
    try:
        data = analyze_token_norms({"sink": (model, tokenizer)}, texts, tmp_path, max_batches=1, progress=False)
    finally:
        handle.remove()
    for clean, sunk in zip(plain, data["models"]["sink"]["layers"]):
        assert clean["first_token"] < 10 * clean["median"]
        assert sunk["first_token"] > 50 * sunk["median"]
    saved = json.loads((tmp_path / "token_norms.json").read_text())
    assert saved["models"]["sink"]["layers"][1] == pytest.approx(data["models"]["sink"]["layers"][1])
    assert (tmp_path / "token_norms.png").stat().st_size > 0
    report = build_report([tmp_path], tmp_path / "rep", title="t")["markdown"].read_text()
    assert "Token norms" in report


def test_cli_token_norms(workspace, tmp_path):
    result = CliRunner().invoke(analyze_command, ["token-norms", "--model", f"base={workspace / 'model'}", "--texts",
                                                  str(workspace / "forget.jsonl"), "--batches", "1", "--output",
                                                  str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "token_norms.json").read_text())
    assert [r["layer"] for r in data["models"]["base"]["layers"]] == list(range(6))
    assert "median / first-token norm" in result.output


def test_decoder_outputs_are_the_layers_outputs_not_the_final_norm():
    from rmu.analysis.common import decoder_outputs

    model, tokenizer = tiny_model("llama", num_layers=3, seed=0)
    ids = tokenizer(["Hydrogen is the lightest element."], return_tensors="pt")["input_ids"]
    outputs = decoder_outputs(model, ids)
    with torch.no_grad():
        states = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(outputs) == 3
    for index in range(2):
        torch.testing.assert_close(outputs[index], states[index + 1])
    # transformers' last hidden state is the final norm of the last layer's output (Llama)
    torch.testing.assert_close(model.model.norm(outputs[2]), states[3])
    assert not torch.allclose(outputs[2], states[3])


def test_noise_at_the_last_layer_is_the_noise_to_signal_ratio():
    # g is the identity for k = L-1: the noise must reach the captured output (it was lost before the
    # stop-after-layer hook moved to rmu.runner.forward_until, which runs the layer's earlier hooks first).
    from rmu.analysis.noise import noise_sensitivity

    model, tokenizer = tiny_model("llama", num_layers=4)
    texts = ["Paris is the capital of France.", "Iron has the symbol Fe and oxygen is O."]
    [last] = noise_sensitivity(model, tokenizer, texts, layers=[3], scale=0.1, samples=2, progress=False)
    assert 0.5 * 0.1 ** 2 < last["sensitivity"] < 1.5 * 0.1 ** 2
