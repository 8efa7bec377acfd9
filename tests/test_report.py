"""rmu.report: one page (HTML and Markdown) for an unlearning run folder and a sweep folder made by
tiny runs; the numbers in the tables are those of the folders' JSON."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from conftest import unlearn_options
from rmu.analysis import AnalysisError, analyze_norms
from rmu.cli.report import command as report_command
from rmu.cli.sweep import command as sweep_command
from rmu.config import make_config
from rmu.engine import unlearn
from rmu.report import build_report


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
