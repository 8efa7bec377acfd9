"""``rmu report``: one self-contained HTML page and a Markdown page for any folders rmu wrote."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output", type=click.Path(file_okay=False), required=True, help="Folder for report.html and report.md.")
@click.option("--title", default="rmu report", show_default=True)
def command(folders, output, title):
    """Configuration, tables and all figures of the given folders in report.html (+ report.md)."""
    from rmu.report import build_report

    paths = build_report(list(folders), output, title)  # rmu's errors are printed by the rmu group (rmu.cli)
    click.echo(f"report written to {paths['html']} and {paths['markdown']}")
