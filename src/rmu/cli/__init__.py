"""The ``rmu`` command line: a thin layer that parses options and calls the Python API.

Each sub-command lives in its own module of this package and exposes a click object ``command``.

Errors: an :class:`rmu.errors.RmuError` (bad input, a run that cannot go on) is printed here, once
for every command, as ``Error: <message>`` with exit code 1; any other exception is a bug and keeps
its traceback. ``rmu --debug ...`` or ``RMU_DEBUG=1`` shows the traceback of expected errors too.
"""

from __future__ import annotations

import importlib

import click

from rmu import __version__
from rmu.errors import RmuError, debug_requested

# Module name -> command name. Imported lazily so ``rmu --help`` stays fast.
_COMMANDS = {
    "unlearn": "unlearn",
    "eval": "eval",
    "demo": "demo",
    "sweep": "sweep",
    "analyze": "analyze",
    "report": "report",
    "attack": "attack",
    "recipes": "recipes",
    "tune": "tune",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS.values())

    def get_command(self, ctx, name):
        for module, command in _COMMANDS.items():
            if command == name:
                return importlib.import_module(f"rmu.cli.{module}").command
        return None

    def invoke(self, ctx):
        debug = ctx.params.get("debug") or debug_requested()
        try:
            return super().invoke(ctx)
        except RmuError as error:
            if debug:
                raise
            raise click.ClickException(str(error)) from None
        except click.ClickException as error:
            # Some commands turn errors into messages themselves; --debug still shows where they arose.
            if debug and error.__context__ is not None:
                raise error.__context__ from None
            raise


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="rmu")
@click.option("--debug", is_flag=True, help="Show the traceback of errors (also: RMU_DEBUG=1).")
def main(debug: bool) -> None:
    """Unlearn knowledge from causal LMs by representation misdirection (RMU, Adaptive RMU)."""
