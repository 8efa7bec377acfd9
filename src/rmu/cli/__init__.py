"""The ``rmu`` command line: a thin layer that parses options and calls the Python API.

Each sub-command lives in its own module of this package and exposes a click object ``command``.
"""

from __future__ import annotations

import importlib

import click

from rmu import __version__

# Module name -> command name. Imported lazily so ``rmu --help`` stays fast.
_COMMANDS = {
    "unlearn": "unlearn",
    "eval": "eval",
    "demo": "demo",
    "sweep": "sweep",
    "analyze": "analyze",
    "report": "report",
    "attack": "attack",
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


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="rmu")
def main() -> None:
    """Unlearn knowledge from causal LMs by representation misdirection (RMU, Adaptive RMU)."""
