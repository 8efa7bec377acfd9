"""One self-contained page (HTML with figures embedded as base64 PNG, and Markdown) for any folder
an rmu command wrote: unlearning runs, sweeps, analyses, attacks, tuning studies.

A folder's results are found by :mod:`rmu.experiments.registry` (a JSON file whose ``"kind"`` names
an experiment, or a run's ``run.json``); each becomes a section with its settings, the tables and
notes its experiment builds from the saved data, and its figures.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from pathlib import Path
from typing import Sequence

from rmu.experiments.base import ExperimentError, Section
from rmu.outputs import writes_folder
from rmu.plots import save_figure

def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def sections_of(folder: Path) -> list[Section]:
    """One section per result of rmu in ``folder``."""
    from rmu.experiments.registry import results_in

    sections = [experiment.section(folder, data) for experiment, data in results_in(folder)]
    if not sections:
        raise ExperimentError(f"{folder}: no result of rmu found (no run.json, and no JSON result of an rmu "
                              "analysis, sweep, attack or study)")
    return sections


def _markdown(sections: list[Section], title: str, figure_dir: Path, base: Path) -> str:
    out = [f"# {title}", ""]
    for index, section in enumerate(sections):
        out += [f"## {section.title}", "", f"Folder: `{section.folder}`", "", "Configuration:", "", "```json",
                json.dumps(section.settings, indent=2, default=str), "```", ""]
        for table in section.tables:
            out += [f"**{table.title}**", ""] if table.title else []
            out += ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
            out += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in table.rows]
            out.append("")
        out += [f"- {note}" for note in section.notes] + ([""] if section.notes else [])
        for figure in section.figures:
            target = figure_dir / f"{index}_{figure.name}"
            out += [f"![{figure.stem}]({target.relative_to(base).as_posix()})", ""]
    return "\n".join(out) + "\n"


def _html(sections: list[Section], title: str, figure_dir: Path) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "pre{background:#f6f6f6;padding:.5em;overflow:auto;font-size:12px}img{max-width:100%}</style>",
           "</head><body>", f"<h1>{e(title)}</h1>"]
    for index, section in enumerate(sections):
        out += [f"<h2>{e(section.title)}</h2>", f"<p>Folder: <code>{e(str(section.folder))}</code></p>",
                "<details><summary>Configuration</summary><pre>",
                e(json.dumps(section.settings, indent=2, default=str)), "</pre></details>"]
        for table in section.tables:
            out += [f"<h3>{e(table.title)}</h3>"] if table.title else []
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in table.header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(_fmt(c))}</td>" for c in row) + "</tr>" for row in table.rows]
            out.append("</table>")
        if section.notes:
            out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in section.notes) + "</ul>")
        for figure in section.figures:
            encoded = base64.b64encode((figure_dir / f"{index}_{figure.name}").read_bytes()).decode("ascii")
            out.append(f"<figure><img alt='{e(figure.stem)}' src='data:image/png;base64,{encoded}'>"
                       f"<figcaption>{e(figure.name)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


@writes_folder("report", result_folders=("folders",))
def build_report(folders: Sequence[str | Path], output: str | Path, title: str = "rmu report") -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``figures/``) to ``output``."""
    if not folders:
        raise ExperimentError("give at least one run, sweep, analysis, attack or study folder")
    sections = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ExperimentError(f"{folder} is not a folder")
        sections += sections_of(folder)
    output = Path(output)
    figure_dir = output / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for index, section in enumerate(sections):
        for figure in section.figures:
            shutil.copyfile(figure, figure_dir / f"{index}_{figure.name}")
        for name, drawn in section.drawn.items():  # drawn from the data: saved beside the copies
            save_figure(drawn, figure_dir / f"{index}_{name}")
            section.figures.append(Path(name))
        section.drawn = {}
    markdown = output / "report.md"
    markdown.write_text(_markdown(sections, title, figure_dir, output), encoding="utf-8")
    page = output / "report.html"
    page.write_text(_html(sections, title, figure_dir), encoding="utf-8")
    return {"html": page, "markdown": markdown}
