"""``rmu demo``: the offline end-to-end demo on SmolLM2-135M (see rmu.demo.run)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--quick", is_flag=True, help="A smoke run in about 3 minutes: fewer steps and questions.")
@click.option("--output", default="rmu-demo", show_default=True, type=click.Path(file_okay=False),
              help="Report folder (results.json, report.md, accuracy.png, step logs).")
@click.option("--steering-coeff", type=float, help="RMU's c (default: the published 6.5).")
@click.option("--beta", type=float, help="Adaptive RMU's beta (default 2).")
@click.option("--steps", type=int, help="Unlearning steps per method (default 75; quick: 40).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def command(quick: bool, output: str, steering_coeff, beta, steps, quiet: bool) -> None:
    """Unlearn element symbols from a real pretrained model, offline, and report before/after."""
    import dataclasses

    from rmu.demo.run import DEFAULT, NAMES, QUICK, run_demo

    changes = {k: v for k, v in dict(steering_coeff=steering_coeff, beta=beta, steps=steps).items() if v is not None}
    settings = dataclasses.replace(QUICK if quick else DEFAULT, **changes)
    from rmu.outputs import OutputError

    try:
        results = run_demo(output, quick=quick, progress=not quiet, settings=settings)
    except OutputError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{'model':<14}{'forget acc':>11}{'retain acc':>11}{'perplexity':>11}")
    for key, scores in results["models"].items():
        click.echo(f"{NAMES[key]:<14}{scores['forget_accuracy']:>11.3f}{scores['retain_accuracy']:>11.3f}"
                   f"{scores['general_perplexity']:>11.2f}")
    click.echo(f"chance {results['chance']:.2f}; report: {output}/report.md")
