"""Command-line options generated from an experiment's settings, so each setting is written once.

:func:`settings_options` turns the fields of a :class:`rmu.experiments.Settings` model into click
options (name, type, range, choices, default and help all come from the field);
:func:`experiment_command` builds a whole sub-command for an experiment: its options plus
``--output`` (a new or empty folder, or one rmu wrote: :mod:`rmu.outputs`), ``--quiet`` and
``--no-plot``; it runs :meth:`Experiment.run` and prints the
experiment's summary. Errors are printed by the ``rmu`` group (:mod:`rmu.cli`).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import annotated_types
import click
from pydantic.fields import FieldInfo

from rmu.experiments.base import Experiment, Settings
from rmu.experiments.values import TextValidator


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``int | None`` -> (int, True)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _range(info: FieldInfo) -> dict:
    bounds: dict = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["min"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            bounds.update(min=item.gt, min_open=True)
        elif isinstance(item, annotated_types.Le):
            bounds["max"] = item.le
        elif isinstance(item, annotated_types.Lt):
            bounds.update(max=item.lt, max_open=True)
    return bounds


_PATH_TYPES = {"file": dict(exists=True, dir_okay=False), "dir": dict(exists=True, file_okay=False),
               "any": dict(exists=True)}


def _click_type(annotation: Any, info: FieldInfo, extra: dict) -> Any:
    if "path" in extra:
        return click.Path(**_PATH_TYPES[extra["path"]])
    if typing.get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    bounds = _range(info)
    if annotation is int:
        return click.IntRange(**bounds) if bounds else click.INT
    if annotation is float:
        return click.FloatRange(**bounds) if bounds else click.FLOAT
    return click.STRING


def option_for(name: str, info: FieldInfo) -> Any | None:
    """The click option of one settings field (None: the field has no option)."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "cli" in extra and extra["cli"] is None:
        return None
    flag = extra.get("cli") or "--" + name.replace("_", "-")
    annotation, optional = _unwrap_optional(info.annotation)
    origin = typing.get_origin(annotation)
    required = info.is_required()
    default = None if required else info.get_default(call_default_factory=True)
    common = dict(help=info.description, show_default=not required and default not in (None, (), [], {}))
    # A required option gets no default at all: click counts even None as given, and never says it is missing.
    default_given = {} if required else {"default": default}
    if annotation is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=default, **common)
    if extra.get("argument"):
        # Positional values (``rmu analyze norms RUN...``); a list field.
        kind = _click_type(typing.get_args(annotation)[0], info, extra)
        return click.argument(name, nargs=-1, required=required, type=kind)
    if origin in (list, tuple) and _parses_text(info):
        # One text that the field's validator parses (``--layers 3-15:3``, ``--values 1,2,5``).
        text = ",".join(str(v) for v in default) if isinstance(default, (list, tuple)) else default
        return click.option(flag, name, type=click.STRING, required=required and not optional, default=text,
                            metavar=extra.get("metavar"), help=info.description,
                            show_default=text not in (None, ""))
    if origin in (list, tuple, dict):
        # A repeatable option; a dict field takes NAME=VALUE items that its validator parses (and checks).
        kind = click.STRING if origin is dict else _click_type(typing.get_args(annotation)[0], info, extra)
        return click.option(flag, name, multiple=True, required=required, metavar=extra.get("metavar"),
                            type=kind, help=info.description, **({} if required else {"default": ()}))
    return click.option(flag, name, type=_click_type(annotation, info, extra), required=required and not optional,
                        metavar=extra.get("metavar"), **default_given, **common)


def _parses_text(info: FieldInfo) -> bool:
    return any(isinstance(item, TextValidator) for item in info.metadata)


def settings_options(settings: type[Settings]):
    """Decorator adding one option per settings field, in the fields' order."""
    options = [option_for(name, info) for name, info in settings.model_fields.items()]

    def decorate(function):
        for option in reversed([o for o in options if o is not None]):
            function = option(function)
        return function

    return decorate


def settings_from_options(settings: type[Settings], values: dict) -> Settings:
    """The settings from the parsed options: an option left empty keeps the field's own default."""
    given = {}
    for name, value in values.items():
        if name not in settings.model_fields:
            continue
        if value == () and not settings.model_fields[name].is_required():
            continue
        given[name] = list(value) if isinstance(value, tuple) else value
    return settings.parse(**given)


def experiment_command(experiment: Experiment, name: str, help: str | None = None) -> click.Command:
    """A click command running ``experiment``: its settings' options, --output, --quiet, --no-plot."""

    @click.command(name, help=help or (experiment.__doc__ or "").strip())
    @settings_options(experiment.settings)
    @click.option("--output", type=click.Path(file_okay=False), required=True,
                  help=f"Folder for {experiment.result_file()} and the figures.")
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    @click.option("--no-plot", is_flag=True, help="Write the JSON only.")
    def command(output, quiet, no_plot, **values):
        settings = settings_from_options(experiment.settings, values)
        data = experiment.run(settings, output, plot=not no_plot, progress=not quiet)
        for line in experiment.summary(data):
            click.echo(line)
        written = [experiment.result_file(), *([] if no_plot else experiment.figure_files)]
        click.echo(f"{' and '.join(written)} written to {output}")

    return command
