"""The convergence figure: layer-l forget-representation norm against the step, from run.json files.

The engine logs, per step, ``forget_norm`` (mean over real tokens of the per-token norm of the
updated layer-l output on the forget batch) and ``coeff`` (the coefficient c of that step's
target c*u, whose norm is c). When the forget loss converges the norm approaches c; when the
frozen norm starts far above c (RMU with a small fixed c at a deep layer), it may not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pydantic import Field

from rmu.analysis.common import AnalysisError, read_json
from rmu.experiments.base import Experiment, Settings, Table
from rmu.run_folder import RUN_FILE

RESULT_FILE = "norms.json"


def find_run_files(paths: Sequence[str | Path]) -> list[Path]:
    """run.json files from files or folders (a run folder, or a sweep folder with runs/*/run.json)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif (path / RUN_FILE).is_file():
            found.append(path / RUN_FILE)
        elif (path / "runs").is_dir():
            runs = sorted((path / "runs").glob(f"*/{RUN_FILE}"), key=_run_order)
            if not runs:
                raise AnalysisError(f"{path}/runs holds no run.json")
            found += runs
        else:
            raise AnalysisError(f"{path}: not a run.json, a run folder or a sweep folder")
    if not found:
        raise AnalysisError("give at least one run.json or run folder")
    return found


def _run_order(path: Path):
    config = read_json(path).get("config", {})
    return (str(config.get("method")), config.get("layer", 0), config.get("steering_coeff"), config.get("beta"))


def run_series(path: str | Path) -> dict:
    """One run's per-topic series: steps, forget_norm, frozen_forget_norm, coeff; plus a summary."""
    return series_of(read_json(path), path)


def series_of(run: dict, path: str | Path = RUN_FILE) -> dict:
    """:func:`run_series` of a run.json already read (``path`` names it in messages and the result)."""
    steps = run.get("steps")
    if not isinstance(steps, list) or not steps:
        raise AnalysisError(f"{path} holds no per-step records ('steps'); is it a run.json of rmu unlearn?")
    missing = {"step", "topic", "forget_norm", "coeff"} - set(steps[0])
    if missing:
        raise AnalysisError(f"{path}: step records lack {', '.join(sorted(missing))}")
    config = run.get("config", {})
    topics: dict[str, dict] = {}
    for record in steps:
        series = topics.setdefault(record["topic"], {"steps": [], "forget_norm": [], "frozen_forget_norm": [],
                                                     "coeff": [], "forget_loss": []})
        series["steps"].append(record["step"])
        series["forget_norm"].append(record["forget_norm"])
        series["frozen_forget_norm"].append(record.get("frozen_forget_norm"))
        series["coeff"].append(record["coeff"])
        series["forget_loss"].append(record.get("forget_loss"))
    for series in topics.values():
        final, coeff, start = series["forget_norm"][-1], series["coeff"][-1], series["forget_norm"][0]
        # How far the norm is from the target's norm c, relative to c, at the start and the end.
        series["initial_gap"] = abs(start - series["coeff"][0]) / series["coeff"][0]
        series["final_gap"] = abs(final - coeff) / coeff
    method = config.get("method", "?")
    label = f"{'Adaptive RMU' if method == 'adaptive' else 'RMU'}, layer {config.get('layer', '?')}"
    return {"path": str(path), "label": label, "method": method, "layer": config.get("layer"), "topics": topics}


class NormsSettings(Settings):
    runs: list[str] = Field(description="run.json files, run folders or sweep folders (with runs/*/run.json).",
                            json_schema_extra={"argument": True, "path": "any", "results": True})


class Norms(Experiment):
    """Forget-representation norm against the step, coefficient as a line, from run.json files or run/sweep folders."""

    kind = "norms"
    title = "Norm convergence"
    command = "analyze norms"
    settings = NormsSettings

    def compute(self, settings: NormsSettings, progress: bool = True) -> dict:
        return {"runs": [run_series(path) for path in find_run_files(settings.runs)]}

    def figures(self, data: dict) -> dict:
        from rmu import plots

        return {"norms.png": plots.plot_norms(data)}

    def tables(self, data: dict) -> list[Table]:
        header = ["run", "topic", "frozen norm", "final norm", "coefficient", "final |norm-c|/c", "final forget loss"]
        rows = [[run["label"], topic, s["frozen_forget_norm"][0], s["forget_norm"][-1], s["coeff"][-1],
                 f"{100 * s['final_gap']:.1f}%", s["forget_loss"][-1]]
                for run in data["runs"] for topic, s in run["topics"].items()]
        return [Table(header, rows)]

    def summary(self, data: dict) -> list[str]:
        return [f"{run['label']} [{topic}]: norm {series['forget_norm'][0]:.4g} -> {series['forget_norm'][-1]:.4g}"
                f", coefficient {series['coeff'][-1]:.4g} (final gap {100 * series['final_gap']:.1f}%)"
                for run in data["runs"] for topic, series in run["topics"].items()]


def analyze_norms(runs: Sequence[str | Path], output: str | Path | None = None, plot: bool = True) -> dict:
    """Collect the norm series of the given runs; write norms.json and norms.png to ``output``."""
    return Norms().run(NormsSettings.parse(runs=[str(r) for r in runs]), output, plot=plot)
