"""The shape every experiment has: settings, compute, a result that saves and reports itself.

An experiment (an analysis, a sweep, an attack, a tuning study) is a subclass of
:class:`Experiment` with

* ``kind``: the name of its result (the ``"kind"`` key of the JSON, and the file ``<kind>.json``);
* ``settings``: a :class:`Settings` model. Each field is written once, with its type, default,
  range and description; the command line's options are generated from it
  (:func:`rmu.cli.experiments.experiment_command`), and it is saved in the result;
* :meth:`Experiment.compute`: the measurement, returning JSON-ready data;
* :meth:`Experiment.figures`, :meth:`Experiment.tables`, :meth:`Experiment.summary`: how a
  person looks at the result (PNG files, the report's tables, the lines the command prints).
  They read only the saved data, so the report renders any old result folder the same way.

:meth:`Experiment.run` does the rest for every experiment: validate the settings, claim the output
folder (:mod:`rmu.outputs`: never overwrite what the user wrote, one run at a time), compute,
write the JSON atomically and then the figures. :mod:`rmu.experiments.registry` maps each kind to
its experiment for ``rmu report``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from rmu.errors import RmuError


class ExperimentError(RmuError, ValueError):
    """Bad input to an experiment; the message names the setting and the fix."""


class Settings(BaseModel):
    """An experiment's settings: validated on creation, saved in its result.

    Fields carry ``Field(description=...)`` (the option's help) and range constraints
    (``ge``/``le``: the option's range). ``json_schema_extra`` may add, for the command line:
    ``{"cli": "--name"}`` (another option name), ``{"metavar": "NAME=PATH"}``, ``{"path": "file" |
    "dir" | "any"}`` (an input path that must exist; it is also kept apart from the output) and
    ``{"input": True}`` (a task name or an input file: kept apart from the output when it is a path)
    and ``{"cli": None}`` (no option: only the Python API sets it).
    """

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def parse(cls, **values: Any) -> "Settings":
        """Build from keyword values; a wrong value raises :class:`ExperimentError` naming it."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise ExperimentError(_explain(cls, error)) from None

    def saved(self) -> dict:
        """The settings as saved in the result (JSON types)."""
        return self.model_dump(mode="json")

    def input_paths(self, key: str = "path") -> list[Path]:
        """Every path-valued setting marked as an input, for the output checks: ``{"path": ...}`` (a
        path that must exist) or ``{"input": True}`` (a task name or a file: a path only if it exists).

        ``key="results"``: only those marked as folders of results (``{"results": True}``).
        """
        paths: list[Path] = []
        keys = ("path", "input") if key == "path" else (key,)
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if not any(k in extra for k in keys):
                continue
            value = getattr(self, name)
            values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            paths += [Path(v) for v in values if isinstance(v, (str, os.PathLike)) and v != IN_MEMORY]
        return paths


def _explain(settings: type[Settings], error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        if not problem["loc"]:  # a rule across settings (a model validator): its message names them
            parts.append(problem["msg"].removeprefix("Value error, "))
            continue
        name = ".".join(str(p) for p in problem["loc"])
        parts.append(f"{name}: {problem['msg']} (got {problem.get('input')!r})")
    return f"{settings.__name__}: " + "; ".join(parts)


IN_MEMORY = "in memory"  # how a model passed as a Python object is named in saved settings


def _named_paths(value: Any) -> Any:
    """``["base=PATH", "PATH2"]`` (the command line's repeated option) -> ``{"base": "PATH", "PATH2's folder": ...}``."""
    if not isinstance(value, (list, tuple)):
        return value
    named: dict[str, str] = {}
    for item in value:
        name, sep, path = str(item).partition("=")
        if not sep:
            name, path = Path(item).name or str(item), str(item)
        if name in named:
            raise ValueError(f"the name {name!r} is given twice; name each NAME=PATH")
        named[name] = path
    return named


def _existing_folders(value: dict[str, str]) -> dict[str, str]:
    if not value:
        raise ValueError("give at least one model")
    for name, path in value.items():
        if path != IN_MEMORY and not Path(path).is_dir():
            raise ValueError(f"model {name!r}: {path} is not a checkpoint folder")
    return value


# Models under test, by name: a checkpoint folder each (or IN_MEMORY when the Python API was given
# loaded models, which then travel in ``inputs["models"]``).
NamedModels = Annotated[dict[str, str], BeforeValidator(_named_paths), AfterValidator(_existing_folders)]


def split_models(models: dict) -> tuple[dict[str, str], dict[str, tuple]]:
    """The Python API's ``name -> path or (model, tokenizer)`` as (settings value, in-memory pairs)."""
    described = {name: IN_MEMORY if isinstance(source, tuple) else str(source) for name, source in models.items()}
    return described, {name: source for name, source in models.items() if isinstance(source, tuple)}


def open_models(described: dict[str, str], loaded: dict[str, tuple] | None = None):
    """Yield ``(name, model, tokenizer)``, loading each checkpoint folder when its turn comes."""
    loaded = loaded or {}
    for name, path in described.items():
        model, tokenizer = loaded[name] if name in loaded else load_full_model(path)
        yield name, model, tokenizer


def load_full_model(source, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
    """The whole model and its tokenizer, in eval mode (:func:`rmu.preflight.load_whole_model`)."""
    from rmu.loading import CheckpointError
    from rmu.preflight import load_whole_model

    try:
        return load_whole_model(source, dtype, device, trust_remote_code)
    except CheckpointError as error:
        raise ExperimentError(str(error)) from None


@dataclass
class Table:
    """One table of a report section: a header and rows of plain values."""

    header: list[str]
    rows: list[list]
    title: str = ""


@dataclass
class Section:
    """What the report shows of one result: title, settings, tables, notes and figure files."""

    title: str
    folder: Path
    settings: dict
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    drawn: dict[str, Any] = field(default_factory=dict)  # figures drawn from the data (the folder had none)


class Experiment:
    """Base class; see the module's docstring. Subclasses set the class attributes and ``compute``."""

    kind: ClassVar[str]
    title: ClassVar[str]
    command: ClassVar[str]  # the command line that runs it, e.g. "attack relearn" (also in the lock note)
    settings: ClassVar[type[Settings]]
    figure_files: ClassVar[tuple[str, ...]] = ()  # the PNGs figures() draws, named in the command's last line

    @classmethod
    def result_file(cls) -> str:
        return f"{cls.kind}.json"

    # -- the measurement --------------------------------------------------------------------------

    def compute(self, settings: Settings, progress: bool = True, **inputs: Any) -> dict:
        """Measure; returns JSON-ready data. ``inputs``: in-memory objects (models) the settings cannot hold."""
        raise NotImplementedError

    # -- how a person looks at it -----------------------------------------------------------------

    def figures(self, data: dict) -> dict[str, Any]:
        """File name -> matplotlib Figure, drawn from the saved data only."""
        return {}

    def tables(self, data: dict) -> list[Table]:
        """The report's tables, built from the saved data only."""
        return []

    def notes(self, data: dict) -> list[str]:
        """Short lines the report lists under the tables."""
        return []

    def summary(self, data: dict) -> list[str]:
        """The lines the command prints when it ends."""
        return []

    def section(self, folder: Path, data: dict) -> Section:
        """The report's section: settings, tables and notes from the data; the folder's PNG figures, or
        when it has none (written with ``--no-plot``, or a run folder), the figures drawn from the data."""
        figures = sorted(folder.glob("*.png"))
        return Section(f"{self.title}: {folder.name}", folder, data.get("settings", {}), self.tables(data),
                       self.notes(data), figures, {} if figures else self.figures(data))

    # -- running and saving -----------------------------------------------------------------------

    def run(self, settings: Settings | dict, output: str | Path | None = None, *, plot: bool = True,
            progress: bool = True, overwrite: bool = False, inputs: dict | None = None,
            read_folders: tuple[Path, ...] = ()) -> dict:
        """Validate, claim ``output`` (if given), compute, save; returns the data.

        ``inputs``: in-memory objects passed to :meth:`compute` (e.g. loaded models);
        ``read_folders``: result folders the experiment only reads, inside which ``output`` may lie.
        """
        from rmu.outputs import claim_folder, input_paths

        if isinstance(settings, dict):
            settings = self.settings.parse(**settings)
        if output is None:
            return self._compute(settings, progress, inputs or {})
        with claim_folder(output, self.command, input_paths(*settings.input_paths()),
                          may_lie_inside=input_paths(*read_folders, *settings.input_paths("results")),
                          overwrite=overwrite):
            data = self._compute(settings, progress, inputs or {})
            self.save(data, output, plot=plot)
        return data

    def _compute(self, settings: Settings, progress: bool, inputs: dict) -> dict:
        data = self.compute(settings, progress=progress, **inputs)
        data.setdefault("kind", self.kind)
        data.setdefault("settings", settings.saved())
        return data

    def save(self, data: dict, output: str | Path, plot: bool = True) -> list[Path]:
        """Write ``<kind>.json`` (atomically), then each figure; returns the files written."""
        output = Path(output)
        written = [write_json(output / self.result_file(), data)]
        if plot:
            from rmu.plots import save_figure

            for name, figure in self.figures(data).items():
                written.append(save_figure(figure, output / name))
        return written


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (a crash never leaves half a file that a resume or a report would trust)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, default=_jsonable)
        stream.write("\n")
    os.replace(temporary, path)
    return path


def _jsonable(value):
    import torch

    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExperimentError(f"{path} is not valid JSON: {error}") from None
