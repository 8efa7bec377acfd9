"""Layer and coefficient sweeps: many unlearning runs on ONE loaded model, each evaluated.

Every point calls :func:`rmu.engine.unlearn` on the model held in memory, scores it with
:func:`rmu.eval.evaluate`, and puts the original weights back (``restore_original``) before
the next point. Results go to ``<output>/sweep.json`` after each point, so an interrupted sweep
resumes where it stopped: a rerun skips the points already there. Each point's per-step log is
kept as ``<output>/runs/<point>/run.json`` (the format ``rmu unlearn`` writes), which
``rmu analyze norms`` reads.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import torch
from pydantic import Field, field_validator

from rmu.progress import bar as tqdm

from rmu import rules, run_folder
from rmu.analysis.common import (AnalysisError, forget_batches, layer_output, load_full_model, mean_cosine,
                                 read_json, write_json)
from rmu.config import ConfigError, UnlearnConfig, make_config
from rmu.engine import UnlearnError, unlearn
from rmu.eval import evaluate
from rmu.eval.tasks import Task, load_task
from rmu.experiments.base import Experiment, Settings, Table
from rmu.experiments.values import FloatList, IntList, NameList, Scoring
from rmu.structure import check_layer, find_structure, select_parameters

SWEEP_FILE = "sweep.json"
METHODS = ("rmu", "adaptive")
# Options a sweep sets itself for every point.
_POINT_OPTIONS = ("method", "layer", "update_layers", "output", "resume", "save_every", "overwrite")


def _base_values(base: dict | UnlearnConfig) -> dict[str, Any]:
    values = base.model_dump() if isinstance(base, UnlearnConfig) else dict(base)
    for key in ("output", "resume", "save_every", "overwrite"):
        values.pop(key, None)
    return values


def sweep_inputs(arguments: dict) -> list:
    """The input paths of a sweep (model, corpora, control vectors, task files), for rmu.outputs."""
    base = arguments["base"]
    values = base.model_dump() if isinstance(base, UnlearnConfig) else dict(base)
    return [values.get(k) for k in ("model", "forget", "retain", "control_vectors")] + [
        list(arguments.get("forget_tasks") or ()), list(arguments.get("retain_tasks") or ())]


def _load_tasks(tasks: Sequence[str | Path | Task], what: str, subject: str = "") -> list[Task]:
    if not tasks:
        raise AnalysisError(f"give at least one {what} task (a task name or a question file)")
    loaded = []
    for item in tasks:
        try:
            loaded.append(load_task(item, subject=subject))
        except (FileNotFoundError, ValueError) as error:
            raise AnalysisError(f"{what} task {item!s}: {error}") from None
    return loaded


def _accuracy(results: dict, names: list[str]) -> float:
    """Question-weighted accuracy over the named tasks."""
    count = sum(results[n].count for n in names)
    return sum(results[n].accuracy * results[n].count for n in names) / count


class _Sweep:
    """Book-keeping shared by both sweeps: the JSON file, resume, the model, evaluation."""

    def __init__(self, kind: str, output, settings: dict, grid: dict, forget_tasks, retain_tasks, scoring: str,
                 limit: int | None, eval_batch_size: int, model, tokenizer, overwrite: bool, progress: bool):
        self.output = Path(output)
        self.path = self.output / SWEEP_FILE
        self.progress = progress
        self.forget = _load_tasks(forget_tasks, "forget")
        self.retain = _load_tasks(retain_tasks, "retain")
        self.scoring, self.limit, self.eval_batch_size = scoring, limit, eval_batch_size
        settings = dict(settings, forget_tasks=[t.name for t in self.forget],
                        retain_tasks=[t.name for t in self.retain], scoring=scoring, limit=limit)
        self.data = {"kind": kind, "settings": dict(settings), "baseline": None, "points": []}
        if self.path.is_file() and not overwrite:
            saved = read_json(self.path)
            old = {k: v for k, v in saved.get("settings", {}).items() if k not in grid}
            if saved.get("kind") != kind or old != _json_roundtrip(settings):
                changed = _changed_keys(old, _json_roundtrip(settings))
                raise AnalysisError(
                    f"{self.path} holds a different sweep (differs in: {', '.join(changed) or 'kind'}); "
                    "use another --output or pass --overwrite"
                )
            self.data = saved
        # The grid may grow between runs (points already done are kept); settings must not change.
        for key, values in grid.items():
            known = self.data["settings"].get(key, [])
            self.data["settings"][key] = sorted(set(known) | set(values)) if key != "methods" else \
                list(dict.fromkeys([*known, *values]))
        self.model, self.tokenizer = model, tokenizer
        self.names = self._task_names()

    def _task_names(self):
        # evaluate() renames duplicates (name_2); mirror it so accuracies group correctly.
        from rmu.eval.tasks import unique_name

        taken: dict[str, None] = {}
        forget, retain = [], []
        for group, tasks in ((forget, self.forget), (retain, self.retain)):
            for task in tasks:
                name = unique_name(task.name, taken)
                taken[name] = None
                group.append(name)
        return forget, retain

    def ensure_model(self, source: str, dtype: str, device: str, trust_remote_code: bool) -> None:
        if self.model is None:
            self.model, self.tokenizer = load_full_model(source, dtype, device, trust_remote_code)
        if getattr(self.model, "rmu_truncated_at_layer", None) is not None:
            raise AnalysisError("sweeps evaluate the model: pass a full model (with its LM head), not a truncated one")

    def evaluate(self) -> dict:
        results = evaluate(self.model, self.tokenizer, [*self.forget, *self.retain], scoring=self.scoring,
                           batch_size=self.eval_batch_size, limit=self.limit, progress=False)
        forget_names, retain_names = self.names
        return {
            "forget_accuracy": _accuracy(results, forget_names),
            "retain_accuracy": _accuracy(results, retain_names),
            "tasks": {name: {"accuracy": r.accuracy, "stderr": r.stderr, "count": r.count}
                      for name, r in results.items()},
        }

    def done(self, key: dict) -> bool:
        return any(all(p.get(k) == v for k, v in key.items()) for p in self.data["points"])

    def save(self) -> None:
        self.data["points"].sort(key=lambda p: tuple(str(p.get(k)) for k in ("method", "layer", "value")))
        write_json(self.path, self.data)


def _json_roundtrip(value):
    import json

    return json.loads(json.dumps(value, default=str))


def _changed_keys(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _run_point(sweep: _Sweep, values: dict, key: dict, run_name: str, extra=None) -> dict:
    """One unlearning run + evaluation on the shared model; the original weights are back after it."""
    try:
        config = make_config(values)
    except ConfigError as error:
        raise AnalysisError(str(error)) from None
    structure = find_structure(sweep.model)
    check_layer(config.layer, structure.num_layers, error=AnalysisError)
    # The engine restores nothing when it fails mid-run: keep our own copy of what it may change.
    trained = select_parameters(sweep.model, structure, config.update_layers, config.params)
    saved = {name: p.detach().clone() for name, p in trained.items()}
    started = time.perf_counter()
    point = dict(key)
    try:
        result = unlearn(config, model=sweep.model, tokenizer=sweep.tokenizer, progress=sweep.progress)
    except UnlearnError as error:
        point.update(error=str(error), forget_accuracy=None, retain_accuracy=None)
    else:
        try:
            point.update(sweep.evaluate())
            if extra is not None:
                point.update(extra(config, result))
            last = result.records[-1] if result.records else {}
            point.update(
                coefficients=result.coefficients,
                steps=len(result.records),
                final_forget_loss=last.get("forget_loss"),
                final_retain_loss=last.get("retain_loss"),
                final_forget_norm=last.get("forget_norm"),
                frozen_forget_norm=last.get("frozen_forget_norm"),
                seconds=round(time.perf_counter() - started, 2),
                run=f"runs/{run_name}/{run_folder.RUN_FILE}",
            )
            run = run_folder.run_summary(result, structure)
            run["status"] = "complete (in-memory sweep point; no checkpoint saved)"
            write_json(sweep.output / "runs" / run_name / run_folder.RUN_FILE, run)
        finally:
            result.restore_original()
    finally:
        with torch.no_grad():
            for name, parameter in trained.items():
                parameter.copy_(saved[name])
    return point


# Per-point numbers averaged over seeds (mean, and std as <key>_std) when a sweep runs several.
_SEED_AVERAGED = ("forget_accuracy", "retain_accuracy", "cosine", "final_forget_loss", "final_retain_loss",
                  "final_forget_norm", "frozen_forget_norm", "seconds")


def _run_point_seeds(sweep: _Sweep, values: dict, key: dict, run_name: str, seeds: int, extra=None) -> dict:
    """The point on ``seeds`` seeds (the config's seed, +1, ...): each run kept under ``seeds``, the
    numbers of ``_SEED_AVERAGED`` replaced by their mean with the sample std beside them."""
    if seeds == 1:
        return _run_point(sweep, values, key, run_name, extra)
    first = int(values.get("seed", 42))
    runs = [_run_point(sweep, dict(values, seed=seed), key, f"{run_name}_seed{seed}", extra)
            for seed in range(first, first + seeds)]
    point = dict(key)
    for run, seed in zip(runs, range(first, first + seeds)):
        run["seed"] = seed
    ok = [r for r in runs if "error" not in r]
    if len(ok) < len(runs):
        point["error"] = next(r["error"] for r in runs if "error" in r)
    for name in _SEED_AVERAGED:
        numbers = [r[name] for r in ok if isinstance(r.get(name), (int, float))]
        point[name] = statistics.fmean(numbers) if numbers else None
        point[f"{name}_std"] = statistics.stdev(numbers) if len(numbers) > 1 else None
    if ok:
        point["coefficients"] = ok[0].get("coefficients")
        point["steps"] = ok[0].get("steps")
    point["seeds"] = runs
    return point


class SweepSettings(Settings):
    """What every sweep takes: the options of its runs, the questions that score them, seeds."""

    base: dict = Field(default_factory=dict, description="The options of every unlearning run (UnlearnConfig "
                       "fields: model, forget, retain, steps, lr, ...); the sweep sets method and layer.",
                       json_schema_extra={"cli": None})
    forget_tasks: list[str] = Field(description="Questions measuring the forget topic (repeatable).",
                                    json_schema_extra={"cli": "--forget-task", "metavar": "NAME_OR_FILE"})
    retain_tasks: list[str] = Field(description="Questions measuring what must stay (repeatable).",
                                    json_schema_extra={"cli": "--retain-task", "metavar": "NAME_OR_FILE"})
    scoring: Scoring = Field("cloze", description="How an answer is scored (the evaluator's scoring).")
    limit: int | None = Field(None, ge=1, description="Only the first N questions of each task.")
    eval_batch_size: int = Field(8, ge=1, description="Questions per evaluation batch.")
    seeds: int = Field(1, ge=1, description="Run every point on this many seeds (--seed, +1, ...): mean +- std in "
                                            "the table, error bars in the plot.")

    @field_validator("base", mode="before")
    @classmethod
    def _run_values(cls, value):
        return _base_values(value)

    def input_paths(self, key: str = "path") -> list:
        """The values naming input paths (model, corpora, control vectors, task files), for rmu.outputs."""
        if key != "path":
            return []
        return sweep_inputs({"base": self.base, "forget_tasks": self.forget_tasks, "retain_tasks": self.retain_tasks})


class LayerSweepSettings(SweepSettings):
    layers: IntList = Field(description="Steered layers: 3,6,9 or 3-15 or 3-15:3.")
    methods: NameList = Field(list(METHODS), description="rmu, adaptive or both.")

    @field_validator("layers")
    @classmethod
    def _layers(cls, layers: list[int]) -> list[int]:
        if not layers:
            raise ValueError("give at least one layer")
        if any(layer < 0 for layer in layers):
            raise ValueError(f"layers must be 0 or more, got {layers}")
        return sorted(set(layers))

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValueError(f"unknown method(s) {bad}; use {', '.join(METHODS)}")
        return list(dict.fromkeys(methods))


class CoeffSweepSettings(SweepSettings):
    values: FloatList = Field(description="Coefficients: c for rmu, beta for adaptive (1,2,5,10).")
    method: Literal[METHODS] = Field("rmu", description="The method whose coefficient is swept.")
    layer: int | None = Field(None, description="Steered layer (default: the config's, else 7).")
    cosine_batches: int = Field(4, ge=1, description="Forget batches per topic on which cos(h_l, u) is measured.")

    @field_validator("values")
    @classmethod
    def _values(cls, values: list[float]) -> list[float]:
        if not values:
            raise ValueError("give at least one coefficient value")
        if any(v <= 0 for v in values):
            raise ValueError(f"coefficients must be positive, got {sorted(values)}")
        return sorted(set(values))


def _task_names(tasks: Sequence) -> list[str]:
    return [t.name if isinstance(t, Task) else str(t) for t in tasks or ()]


@dataclass
class _Point:
    """One point of a sweep: its key in sweep.json, the options of its run, the name of its run folder."""

    key: dict
    values: dict
    run_name: str


@dataclass
class _Plan:
    """What a sweep runs: the settings it saves, its grid (which may grow on resume), its points."""

    saved: dict
    grid: dict
    points: list[_Point]
    description: str


class _SweepExperiment(Experiment):
    """A sweep: its points run on one loaded model, sweep.json saved after each (a rerun resumes)."""

    @classmethod
    def result_file(cls) -> str:
        return SWEEP_FILE

    @property
    def figure(self) -> str:
        return f"{self.kind}.png"

    def run(self, settings: SweepSettings | dict, output: str | Path | None = None, *, plot: bool = True,
            progress: bool = True, overwrite: bool = False, inputs: dict | None = None,
            read_folders: tuple[Path, ...] = ()) -> dict:
        """Claim ``output``, run the points not yet in its sweep.json (saving after each), then draw and tabulate.

        ``overwrite``: start over instead of resuming. ``inputs``: a loaded ``model`` and
        ``tokenizer`` to sweep (else ``base['model']`` is loaded once), ``forget_tasks`` and
        ``retain_tasks`` as Task objects.
        """
        from rmu.outputs import claim_folder, input_paths

        if output is None:
            raise AnalysisError(f"{self.command} saves after each point: give an output folder")
        if isinstance(settings, dict):
            settings = self.settings.parse(**settings)
        with claim_folder(output, self.command, input_paths(*settings.input_paths()), overwrite=overwrite) as folder:
            inputs = {k: v for k, v in (inputs or {}).items() if v is not None}
            data = self._sweep(settings, folder, overwrite, progress, **inputs)
            self.save(data, folder, plot=plot)
            (folder / "table.md").write_text(markdown_table(*self.rows(data)) + "\n", encoding="utf-8")
        return data

    def _sweep(self, settings: SweepSettings, output: Path, overwrite: bool, progress: bool, model=None,
               tokenizer=None, forget_tasks=None, retain_tasks=None) -> dict:
        values = dict(settings.base)
        plan = self.plan(settings, values)
        plan.saved.update(_seeds_setting(settings.seeds))
        sweep = _Sweep(self.kind, output, plan.saved, plan.grid, forget_tasks or settings.forget_tasks,
                       retain_tasks or settings.retain_tasks, settings.scoring, settings.limit,
                       settings.eval_batch_size, model, tokenizer, overwrite, progress)
        todo = [point for point in plan.points if not sweep.done(point.key)]
        if todo or sweep.data["baseline"] is None:
            if not values.get("model"):
                raise AnalysisError("the base configuration names no model (--model or 'model:' in --config)")
            sweep.ensure_model(values["model"], values.get("dtype", "float32"), values.get("device", "auto"),
                               values.get("trust_remote_code", False))
            self.check_model(sweep, settings)
        if sweep.data["baseline"] is None:
            sweep.data["baseline"] = self.baseline(sweep, settings, values)
            sweep.save()
        extra = self.measure(sweep, settings)
        bar = tqdm(todo, desc=plan.description, disable=not progress, unit="run")
        for point in bar:
            bar.set_postfix(point.key)
            sweep.data["points"].append(_run_point_seeds(sweep, point.values, point.key, point.run_name,
                                                         settings.seeds, extra))
            sweep.save()
        bar.close()
        return sweep.data

    # -- what each sweep defines --------------------------------------------------------------------

    def plan(self, settings, values: dict) -> _Plan:
        """The settings saved in sweep.json, the grid and the points (the settings checked the grid)."""
        raise NotImplementedError

    def check_model(self, sweep: "_Sweep", settings) -> None:
        """Refuse a grid the loaded model cannot run (before any point)."""

    def baseline(self, sweep: "_Sweep", settings, values: dict) -> dict:
        """The base model's numbers (the model is loaded)."""
        return sweep.evaluate()

    def measure(self, sweep: "_Sweep", settings):
        """What a point measures besides the evaluation: None, or ``f(config, result) -> dict``."""
        return None

    def rows(self, data: dict) -> tuple[list[str], list[list]]:
        """The table's header and rows, built from sweep.json's data."""
        raise NotImplementedError

    # -- how a person looks at it -------------------------------------------------------------------

    def figures(self, data: dict) -> dict:
        from rmu import plots

        draw = plots.plot_layer_sweep if data["kind"] == "layers" else plots.plot_coeff_sweep
        return {self.figure: draw(data)}

    def tables(self, data: dict) -> list[Table]:
        return [Table(*self.rows(data))]

    def notes(self, data: dict) -> list[str]:
        return [f"{p.get('method', '')} {p.get('layer', p.get('value'))}: {p['error']}"
                for p in data["points"] if "error" in p]

    def summary(self, data: dict) -> list[str]:
        return markdown_table(*self.rows(data)).splitlines()


class LayerSweep(_SweepExperiment):
    """RMU and Adaptive RMU at every layer l of a range (updating l-2..l): accuracy against the layer."""

    kind = "layers"
    title = "Layer sweep"
    command = "sweep layers"
    settings = LayerSweepSettings

    def plan(self, settings: LayerSweepSettings, values: dict) -> _Plan:
        points = [_Point({"method": m, "layer": l}, dict(values, method=m, layer=l, update_layers=None),
                         f"{m}_layer{l}") for m in settings.methods for l in settings.layers]
        return _Plan({k: v for k, v in values.items() if k not in _POINT_OPTIONS},
                     {"layers": settings.layers, "methods": settings.methods}, points, "layer sweep")

    def check_model(self, sweep: "_Sweep", settings: LayerSweepSettings) -> None:
        check_layer(max(settings.layers), find_structure(sweep.model).num_layers, error=AnalysisError)

    def rows(self, data: dict) -> tuple[list[str], list[list]]:
        """One row per (method, layer), after the base model's."""
        base = data.get("baseline") or {}
        rows = [["base", "-", base.get("forget_accuracy"), base.get("retain_accuracy"), None, None, None]]
        for p in sorted(data["points"], key=lambda p: (p["method"], p["layer"])):
            rows.append([p["method"], p["layer"], _spread(p, "forget_accuracy"), _spread(p, "retain_accuracy"),
                         _coefficient(p), p.get("frozen_forget_norm"),
                         p.get("final_forget_loss") if "error" not in p else "error: " + p["error"][:60]])
        return ["method", "layer", "forget acc", "retain acc", "coefficient", "frozen forget norm",
                "final forget loss"], rows


class CoeffSweep(_SweepExperiment):
    """A grid of c or beta: accuracy and cos(forget representation, u) against the coefficient."""

    kind = "coeff"
    title = "Coefficient sweep"
    command = "sweep coeff"
    settings = CoeffSweepSettings

    def plan(self, settings: CoeffSweepSettings, values: dict) -> _Plan:
        if settings.layer is not None:
            values.update(layer=settings.layer, update_layers=None)
        method, coefficient = settings.method, _coefficient_name(settings.method)
        saved = {k: v for k, v in values.items() if k not in _POINT_OPTIONS and k != coefficient}
        saved.update(method=method, layer=values.get("layer", 7), coefficient=coefficient,
                     update_layers=values.get("update_layers"), cosine_batches=settings.cosine_batches)
        points = [_Point({"value": v}, dict(values, method=method, **{coefficient: v}), f"{method}_{coefficient}{v:g}")
                  for v in settings.values]
        return _Plan(saved, {"values": settings.values}, points, f"{coefficient} sweep")

    def baseline(self, sweep: "_Sweep", settings: CoeffSweepSettings, values: dict) -> dict:
        coefficient = _coefficient_name(settings.method)
        try:
            config = make_config(dict(values, **{coefficient: min(settings.values)}, method=settings.method))
        except ConfigError as error:
            raise AnalysisError(str(error)) from None
        structure = find_structure(sweep.model)
        check_layer(config.layer, structure.num_layers, error=AnalysisError)
        weight = sweep.model.get_input_embeddings().weight  # u as the run draws it: same rule, dtype, device
        vectors = rules.control_vectors(config, config.topics, structure.hidden_size, weight.dtype, weight.device)
        return {**sweep.evaluate(), **_cosine(sweep, config, vectors, settings.cosine_batches)}

    def measure(self, sweep: "_Sweep", settings: CoeffSweepSettings):
        return lambda config, result: _cosine(sweep, config, result.control_vectors, settings.cosine_batches)

    def rows(self, data: dict) -> tuple[list[str], list[list]]:
        """One row per coefficient value, after the base model's."""
        base = data.get("baseline") or {}
        name = "c" if data["settings"]["coefficient"] == "steering_coeff" else "beta"
        rows = [["base", base.get("forget_accuracy"), base.get("retain_accuracy"), base.get("cosine"), None, None]]
        for p in sorted(data["points"], key=lambda p: p["value"]):
            rows.append([p["value"], _spread(p, "forget_accuracy"), _spread(p, "retain_accuracy"),
                         _spread(p, "cosine"), _coefficient(p), p.get("final_forget_norm")])
        return [name, "forget acc", "retain acc", "cos(h, u)", "effective c", "final forget norm"], rows


def _coefficient_name(method: str) -> str:
    return "steering_coeff" if method == "rmu" else "beta"


def _cosine(sweep: "_Sweep", config: UnlearnConfig, vectors: dict[str, torch.Tensor], cosine_batches: int) -> dict:
    """Mean cos(h_l, u) over the real tokens of each topic's first ``cosine_batches`` forget batches."""
    total, count, per_topic = 0.0, 0, {}
    for topic in config.topics:
        batches = forget_batches(sweep.tokenizer, config.forget[topic], config.batch_size,
                                 config.max_len[config.topics.index(topic)], cosine_batches, config.min_len)
        topic_total, topic_count = 0.0, 0
        for batch in batches:
            hidden = layer_output(sweep.model, config.layer, batch)
            s, n = mean_cosine(hidden, vectors[topic], batch.attention_mask)
            topic_total, topic_count = topic_total + s, topic_count + n
        per_topic[topic] = topic_total / topic_count
        total, count = total + topic_total, count + topic_count
    return {"cosine": total / count, "cosine_per_topic": per_topic, "cosine_tokens": count}


def _common_settings(base, forget_tasks, retain_tasks, scoring, limit, eval_batch_size, seeds) -> dict:
    return dict(base=base, forget_tasks=_task_names(forget_tasks), retain_tasks=_task_names(retain_tasks),
                scoring=scoring, limit=limit, eval_batch_size=eval_batch_size, seeds=seeds)


def sweep_layers(base: dict | UnlearnConfig, layers: Iterable[int], output: str | Path, *,
                 forget_tasks: Sequence, retain_tasks: Sequence, methods: Sequence[str] = METHODS,
                 scoring: str = "cloze", limit: int | None = None, eval_batch_size: int = 8,
                 model=None, tokenizer=None, overwrite: bool = False, progress: bool = True,
                 plot: bool = True, seeds: int = 1) -> dict:
    """RMU and/or Adaptive RMU steering each layer l in ``layers`` (updating l-2..l), each evaluated.

    ``base``: the options of every run (``UnlearnConfig`` fields: model, forget, retain, steps, lr,
    alpha, steering_coeff for RMU, beta for Adaptive RMU, ...); the sweep sets method and layer.
    ``model``/``tokenizer``: a loaded full model to use (else ``base['model']`` is loaded once).
    Returns the sweep's data (also in ``<output>/sweep.json``, with ``layers.png`` and ``table.md``).
    """
    settings = LayerSweepSettings.parse(layers=list(layers), methods=list(methods), **_common_settings(
        base, forget_tasks, retain_tasks, scoring, limit, eval_batch_size, seeds))
    return LayerSweep().run(settings, output, plot=plot, progress=progress, overwrite=overwrite,
                            inputs=dict(model=model, tokenizer=tokenizer, forget_tasks=forget_tasks,
                                        retain_tasks=retain_tasks))


def sweep_coeff(base: dict | UnlearnConfig, values: Iterable[float], output: str | Path, *,
                forget_tasks: Sequence, retain_tasks: Sequence, method: str = "rmu", layer: int | None = None,
                scoring: str = "cloze", limit: int | None = None, eval_batch_size: int = 8,
                cosine_batches: int = 4, model=None, tokenizer=None, overwrite: bool = False,
                progress: bool = True, plot: bool = True, seeds: int = 1) -> dict:
    """A grid of c (``method='rmu'``) or beta (``method='adaptive'``) at one layer.

    Per value: forget/retain accuracy, and the mean cosine similarity between the layer-l forget
    representations and the topic's u, per token over the real (non-pad) tokens of the first
    ``cosine_batches`` forget batches of each topic (tokenised as the run tokenises them).
    The base model's cosine with the same u is in ``baseline['cosine']``.
    """
    settings = CoeffSweepSettings.parse(values=list(values), method=method, layer=layer, cosine_batches=cosine_batches,
                                        **_common_settings(base, forget_tasks, retain_tasks, scoring, limit,
                                                           eval_batch_size, seeds))
    return CoeffSweep().run(settings, output, plot=plot, progress=progress, overwrite=overwrite,
                            inputs=dict(model=model, tokenizer=tokenizer, forget_tasks=forget_tasks,
                                        retain_tasks=retain_tasks))


def _seeds_setting(seeds: int) -> dict:
    """``{"seeds": K}`` for K > 1 (one seed leaves the settings as they always were, for old sweeps)."""
    return {"seeds": seeds} if seeds > 1 else {}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _spread(point: dict, name: str):
    """The point's value, as "mean +- std" when it was averaged over seeds."""
    value, std = point.get(name), point.get(f"{name}_std")
    if value is None or std is None:
        return value
    return f"{value:.3f} +- {std:.3f}"


def _coefficient(point: dict):
    """The first topic's coefficient the run used (c, or Adaptive RMU's beta x norm)."""
    return next(iter((point.get("coefficients") or {}).values()), None)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def layer_table(data: dict) -> str:
    """Markdown: one row per (method, layer), plus the base model."""
    return markdown_table(*LayerSweep().rows(data))


def coeff_table(data: dict) -> str:
    """Markdown: one row per coefficient value, plus the base model."""
    return markdown_table(*CoeffSweep().rows(data))
