"""rmu.report: one page (HTML and Markdown) for each kind of folder rmu writes (unlearning run, sweeps,
analyses, tuning study) made by tiny runs; the numbers in the tables are those of the folders' JSON."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from click.testing import CliRunner

from conftest import unlearn_options
from rmu.analysis import AnalysisError, analyze_confidence, analyze_noise, analyze_norms, sweep_coeff
from rmu.cli import main
from rmu.cli.report import command as report_command
from rmu.cli.sweep import command as sweep_command
from rmu.config import make_config
from rmu.engine import unlearn
from rmu.report import build_report
from rmu.testing import tiny_model


@pytest.fixture(scope="module")
def run_folder(workspace, tmp_path_factory):
    output = tmp_path_factory.mktemp("report") / "run"
    unlearn(make_config(unlearn_options(workspace, layer=2, steps=4, output=str(output))), progress=False)
    return output


def table_rows(markdown: str, header_start: str) -> list[list[str]]:
    """The body rows of the first Markdown table whose header starts with ``header_start``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_report_of_an_unlearn_run(run_folder, tmp_path):
    analyze_norms([run_folder], tmp_path / "run_norms")
    paths = build_report([run_folder, tmp_path / "run_norms"], tmp_path / "rep", title="t")
    text = paths["markdown"].read_text()
    assert "Unlearning run" in text and '"layer": 2' in text
    assert math.isfinite(json.loads((run_folder / "run.json").read_text())["steps"][-1]["forget_loss"])
    assert "Norm convergence" in text


def test_run_table_shows_the_steps_of_run_json(run_folder, tmp_path):
    steps = json.loads((run_folder / "run.json").read_text())["steps"]
    paths = build_report([run_folder], tmp_path / "rep", title="My report")
    markdown = paths["markdown"].read_text()
    assert markdown.startswith("# My report\n") and f"Folder: `{run_folder}`" in markdown
    rows = table_rows(markdown, "| step | topic | forget loss")
    assert [int(row[0]) for row in rows] == [s["step"] for s in steps]
    assert [row[1] for row in rows] == [s["topic"] for s in steps]
    assert [float(row[2]) for row in rows] == pytest.approx([s["forget_loss"] for s in steps], rel=1e-3)
    assert [float(row[4]) for row in rows] == pytest.approx([s["coeff"] for s in steps], rel=1e-3)
    page = paths["html"].read_text()
    assert "<title>My report</title>" in page and page.count("<tr>") == len(steps) + 1


def test_report_of_a_layer_sweep(workspace, tmp_path):
    common = ["--model", workspace / "model", "--forget", f"bio={workspace / 'bio.jsonl'}", "--retain",
              workspace / "retain.txt", "--steps", 2, "--batch-size", 2, "--lr", 5e-3, "--alpha", 10, "--min-len", 0,
              "--max-len", 32, "--retain-max-len", 32, "--device", "cpu", "--forget-task", workspace / "questions.jsonl",
              "--retain-task", workspace / "questions.jsonl", "--scoring", "completion", "--quiet"]
    result = CliRunner().invoke(sweep_command, ["layers", "--layers", "1-2", "--methods", "rmu",
                                                "--output", tmp_path / "sweep", *map(str, common)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    result = CliRunner().invoke(report_command, [str(tmp_path / "sweep"), "--output", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "rep" / "report.md").read_text()
    assert "## Layer sweep: sweep" in markdown
    rows = table_rows(markdown, "| method | layer | forget acc")
    assert [row[:2] for row in rows] == [["base", "-"], ["rmu", "1"], ["rmu", "2"]]
    points = sorted(data["points"], key=lambda p: p["layer"])
    assert [float(row[6]) for row in rows[1:]] == pytest.approx([p["final_forget_loss"] for p in points], rel=1e-3)
    pngs = sorted(p.name for p in (tmp_path / "sweep").glob("*.png"))
    assert markdown.count("![") == len(pngs) and (tmp_path / "rep" / "report.html").read_text().count(
        "data:image/png;base64,") == len(pngs)


def test_report_refuses_folders_without_results(tmp_path):
    with pytest.raises(AnalysisError, match="no result of rmu found"):
        build_report([tmp_path], tmp_path / "rep")
    with pytest.raises(AnalysisError, match="is not a folder"):
        build_report([tmp_path / "missing"], tmp_path / "rep")
    with pytest.raises(AnalysisError, match="at least one"):
        build_report([], tmp_path / "rep")


# ---- every kind of result renders from its own JSON ------------------------------------------------


def report_page(folder, tmp_path) -> str:
    """``rmu report FOLDER`` through the command group; the Markdown page."""
    output = tmp_path / f"report_{folder.name}"
    result = CliRunner().invoke(main, ["report", str(folder), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert (output / "report.html").read_text().count("data:image/png;base64,") == len(list(folder.glob("*.png")))
    return (output / "report.md").read_text()


def g(value) -> str:
    """A number as the report writes it."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def test_report_of_the_analyses(workspace, run_folder, tmp_path):
    model, questions = str(workspace / "model"), workspace / "questions.jsonl"
    data = analyze_confidence({"base": model}, [questions], tmp_path / "conf", tokens=2, limit=2, progress=False)
    page = report_page(tmp_path / "conf", tmp_path)
    entry = data["models"]["base"]
    assert "## MaxLogit confidence: conf" in page and "_confidence.png)" in page
    assert table_rows(page, "| model | tokens | mean max logit") == [
        ["base", str(entry["count"]), g(entry["mean"]), g(entry["variance"]), g(entry["std"])]]

    data = analyze_norms([run_folder], tmp_path / "norms")
    page = report_page(tmp_path / "norms", tmp_path)
    run = shutil.copytree(run_folder, tmp_path / "run")  # an output may lie inside the folders it only reads
    assert analyze_norms([run], run / "norms")["runs"] == [dict(r, path=str(run / "run.json")) for r in data["runs"]]
    series = data["runs"][0]["topics"]["bio"]
    assert "## Norm convergence: norms" in page and "_norms.png)" in page
    assert table_rows(page, "| run | topic | frozen norm") == [
        ["RMU, layer 2", "bio", g(series["frozen_forget_norm"][0]), g(series["forget_norm"][-1]),
         g(series["coeff"][-1]), f"{100 * series['final_gap']:.1f}%", g(series["forget_loss"][-1])]]

    data = analyze_noise({"base": model, "again": model}, workspace / "bio.jsonl", tmp_path / "noise", layers=[0, 2],
                         samples=1, max_batches=1, progress=False)
    page = report_page(tmp_path / "noise", tmp_path)
    layers = data["models"]["base"]["layers"]
    assert "## Noise sensitivity: noise" in page and "_noise.png)" in page
    assert table_rows(page, "| layer k | base | again") == [[str(r["layer"]), g(r["sensitivity"]), g(r["sensitivity"])]
                                                          for r in layers]


def test_report_of_a_coefficient_sweep_on_two_seeds(workspace, tmp_path):
    model, tokenizer = tiny_model("llama", num_layers=6)
    questions = [workspace / "questions.jsonl"]
    data = sweep_coeff(unlearn_options(workspace, steps=2), [2.0, 8.0], tmp_path / "coeff", forget_tasks=questions,
                       retain_tasks=questions, layer=2, cosine_batches=1, scoring="completion", model=model,
                       tokenizer=tokenizer, progress=False, seeds=2)
    page = report_page(tmp_path / "coeff", tmp_path)
    assert "## Coefficient sweep: coeff" in page and "_coeff.png)" in page
    rows = table_rows(page, "| c | forget acc | retain acc | cos(h, u)")
    base = data["baseline"]
    assert rows[0] == ["base", g(base["forget_accuracy"]), g(base["retain_accuracy"]), g(base["cosine"]), "-", "-"]
    for row, point in zip(rows[1:], data["points"]):
        assert row[0] == g(point["value"])
        for cell, name in zip(row[1:4], ("forget_accuracy", "retain_accuracy", "cosine")):
            assert cell == f"{point[name]:.3f} +- {point[name + '_std']:.3f}"  # mean +- std over the seeds
        assert row[5] == g(point["final_forget_norm"])


def test_report_of_a_tuning_study_old_and_new(workspace, tmp_path):
    from rmu.tune import TuneSettings, tune

    questions = [workspace / "questions.jsonl"]
    out = tmp_path / "study"
    summary = tune(unlearn_options(workspace, layer=2, steps=4), out, forget_tasks=questions, retain_tasks=questions,
                   settings=TuneSettings(trials=2, scoring="completion", layers=(2,)), progress=False)
    assert summary["kind"] == "tune" and summary["settings"]["trials"] == 2
    trials = json.loads((out / "trials.json").read_text())["trials"]
    page = report_page(out, tmp_path)
    assert "## Tuning study: study" in page and "_pareto.png)" in page
    rows = table_rows(page, "| trial | state | method")
    assert [row[:3] for row in rows] == [[str(t["number"]), t["state"], t["settings"]["method"]] for t in trials]
    best = table_rows(page, "|  | trial | method")
    assert best[0][1] == str(summary["best"]["number"])
    scores = summary["best"]["scores"]
    assert best[0][-4:-1] == [g(scores["forget_accuracy"]), g(scores["forget_probability"]),
                              g(scores["retain_accuracy"])]
    # A study written before summary.json carried its kind is found by the file's name.
    old = {k: v for k, v in summary.items() if k not in ("kind", "settings")}
    (out / "summary.json").write_text(json.dumps(old))
    assert table_rows(report_page(out, tmp_path / "old"), "| trial | state | method") == rows


def test_figures_are_drawn_from_the_data_when_the_folder_has_none(run_folder, workspace, tmp_path):
    from matplotlib.image import imread

    # A run folder has no figure of its own: the report draws the convergence figure from run.json.
    paths = build_report([run_folder], tmp_path / "run_report")
    assert "![convergence](figures/0_convergence.png)" in paths["markdown"].read_text()
    assert imread(tmp_path / "run_report" / "figures" / "0_convergence.png").shape[0] > 100
    assert paths["html"].read_text().count("data:image/png;base64,") == 1
    # An analysis written with --no-plot: its figure comes back in the report, drawn from its JSON.
    out = tmp_path / "norms"
    result = CliRunner().invoke(main, ["analyze", "token-norms", "--model", f"base={workspace / 'model'}", "--texts",
                                       str(workspace / "bio.jsonl"), "--batches", "1", "--no-plot", "--quiet",
                                       "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert not list(out.glob("*.png"))
    markdown = build_report([out], tmp_path / "norms_report")["markdown"].read_text()
    assert "![token_norms](figures/0_token_norms.png)" in markdown
    assert (tmp_path / "norms_report" / "figures" / "0_token_norms.png").stat().st_size > 0
