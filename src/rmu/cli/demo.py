"""``rmu demo``: the offline end-to-end demo on SmolLM2-135M (see rmu.demo.run)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--quick", is_flag=True, help="A smoke run in about 3 minutes: fewer steps and questions.")
@click.option("--output", default="rmu-demo", show_default=True, type=click.Path(file_okay=False),
              help="Report folder (results.json, report.md, accuracy.png, step logs).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def command(quick: bool, output: str, quiet: bool) -> None:
    """Unlearn element symbols from a real pretrained model, offline, and report before/after."""
    from rmu.demo.run import NAMES, run_demo

    results = run_demo(output, quick=quick, progress=not quiet)
    click.echo(f"{'model':<14}{'forget acc':>11}{'retain acc':>11}{'perplexity':>11}")
    for key, scores in results["models"].items():
        click.echo(f"{NAMES[key]:<14}{scores['forget_accuracy']:>11.3f}{scores['retain_accuracy']:>11.3f}"
                   f"{scores['general_perplexity']:>11.2f}")
    click.echo(f"chance {results['chance']:.2f}; report: {output}/report.md")
