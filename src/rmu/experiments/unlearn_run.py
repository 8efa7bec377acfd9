"""How the report shows an unlearning run (``rmu unlearn``'s ``run.json``).

Not computed here (the engine writes it, :mod:`rmu.engine`); registered like any experiment so
that ``rmu report`` renders a run folder from its own data: the step log (a dozen rows spread over
the run), the convergence figure (the layer-l forget norm against the step, the coefficient as a
line: :func:`rmu.plots.plot_norms`) and, as notes, the run's health report and the scale calibration
when ``--auto`` was given.
"""

from __future__ import annotations

from rmu.experiments.base import Experiment, Settings, Table
from rmu.run_folder import RUN_FILE


class UnlearnRun(Experiment):
    kind = "run"
    title = "Unlearning run"
    command = "unlearn"
    settings = Settings  # the run's settings are its UnlearnConfig, saved under "config"

    @classmethod
    def result_file(cls) -> str:
        return RUN_FILE

    def section(self, folder, data):
        section = super().section(folder, data)
        section.settings = data.get("config", {})
        return section

    def figures(self, data: dict) -> dict:
        from rmu.analysis.norms import series_of
        from rmu.plots import plot_norms

        steps = data.get("steps") or []
        if not steps or not {"forget_norm", "coeff"} <= set(steps[0]):
            return {}
        return {"convergence.png": plot_norms({"runs": [series_of(data)]})}

    def tables(self, data: dict) -> list[Table]:
        tables = []
        steps = data.get("steps") or []
        if steps:
            shown = steps if len(steps) <= 12 else [steps[i * (len(steps) - 1) // 11] for i in range(12)]
            rows = [[r["step"], r["topic"], r["forget_loss"], r["retain_loss"], r["coeff"], r.get("forget_norm"),
                     r.get("frozen_forget_norm")] for r in shown]
            tables.append(Table(["step", "topic", "forget loss", "retain loss", "coefficient", "forget norm",
                                 "frozen forget norm"], rows, "Steps"))
        return tables

    def notes(self, data: dict) -> list[str]:
        notes = [f"coefficients: {data.get('coefficients')}", f"seconds: {data.get('seconds')}",
                 f"trained parameters: {', '.join(data.get('trained_parameters', []))}"]
        health = data.get("health") or {}
        if health:
            notes.append(f"run health: {health.get('verdict')}")
        for t in health.get("topics", []):
            notes.append(f"[{t['topic']}] updated forget |h| {_g(t.get('forget_norm'))} against c {_g(t.get('coefficient'))}"
                         f" (frozen {_g(t.get('frozen_forget_norm'))}); cos(h, u) {_g(t.get('frozen_cosine_with_u'))} -> "
                         f"{_g(t.get('cosine_with_u'))}; progress {_g(t.get('progress'))}; retain drift "
                         f"{_g(t.get('retain_drift'))}")
        notes += [f"warning: {w['message']}" for w in health.get("warnings", [])]
        calibration = data.get("calibration")
        if calibration:
            notes.append(f"scale calibration (--auto): {calibration}")
        return notes


def _g(value) -> str:
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)
