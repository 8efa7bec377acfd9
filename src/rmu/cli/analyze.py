"""``rmu analyze confidence | norms | noise-sensitivity | token-norms``."""

from __future__ import annotations

import click

from rmu.cli.experiments import experiment_command
from rmu.cli.sweep import SCORINGS, parse_int_range


def parse_models(items: tuple[str, ...]) -> dict[str, str]:
    """('base=path', 'unlearned=path2') -> {...}; a bare path is named after its folder."""
    from pathlib import Path

    models: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name or item, item
        if name in models:
            raise click.BadParameter(f"model name {name!r} given twice; name them NAME=PATH", param_hint="--model")
        if not Path(path).is_dir():
            raise click.BadParameter(f"{path} is not a checkpoint folder", param_hint="--model")
        models[name] = path
    if not models:
        raise click.BadParameter("give at least one --model", param_hint="--model")
    return models


@click.group("analyze")
def command() -> None:
    """Analyses of unlearned models: token confidence, norm convergence, noise sensitivity, token norms."""


@command.command("confidence")
@click.option("--model", "models", multiple=True, required=True, metavar="NAME=PATH",
              help="A model to compare, e.g. base=PATH and unlearned=PATH (repeat).")
@click.option("--questions", multiple=True, required=True, metavar="NAME_OR_FILE", help="Forget questions (repeatable).")
@click.option("--tokens", type=click.IntRange(min=1), default=30, show_default=True, help="Greedy tokens per question.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions of each task.")
@click.option("--prompt", type=click.Choice(SCORINGS), default="cloze", show_default=True,
              help="The evaluator's prompt of this scoring; completion feeds the question itself.")
@click.option("--output", type=click.Path(file_okay=False), required=True)
@click.option("--quiet", is_flag=True)
def confidence_command(models, questions, tokens, limit, prompt, output, quiet):
    """Max logit of greedily generated tokens on forget questions: histograms, mean, variance."""
    from rmu.analysis import AnalysisError, analyze_confidence
    from rmu.outputs import OutputError

    try:
        data = analyze_confidence(parse_models(models), list(questions), output, tokens=tokens, limit=limit,
                                  prompt=prompt, progress=not quiet)
    except (AnalysisError, OutputError) as error:
        raise click.ClickException(str(error)) from None
    for name, entry in data["models"].items():
        click.echo(f"{name}: {entry['count']} tokens, mean max logit {entry['mean']:.3f}, variance {entry['variance']:.3f}")
    click.echo(f"confidence.json and confidence.png written to {output}")


@command.command("norms")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output", type=click.Path(file_okay=False), required=True)
def norms_command(runs, output):
    """Forget-representation norm against the step, coefficient as a line, from run.json files or run/sweep folders."""
    from rmu.analysis import AnalysisError, analyze_norms
    from rmu.outputs import OutputError

    try:
        data = analyze_norms(list(runs), output)
    except (AnalysisError, OutputError) as error:
        raise click.ClickException(str(error)) from None
    for run in data["runs"]:
        for topic, series in run["topics"].items():
            click.echo(f"{run['label']} [{topic}]: norm {series['forget_norm'][0]:.4g} -> {series['forget_norm'][-1]:.4g}"
                       f", coefficient {series['coeff'][-1]:.4g} (final gap {100 * series['final_gap']:.1f}%)")
    click.echo(f"norms.json and norms.png written to {output}")


@command.command("noise-sensitivity")
@click.option("--model", "models", multiple=True, required=True, metavar="NAME=PATH",
              help="A model to measure, e.g. base=PATH and unlearned=PATH (repeat).")
@click.option("--texts", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Texts the hidden states come from (a corpus file, e.g. the forget corpus).")
@click.option("--layers", "layers_text", help="Layers k to inject noise at (default: all but the last).")
@click.option("--scale", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option("--scale-mode", type=click.Choice(["relative", "absolute"]), default="relative", show_default=True,
              help="relative: E||xi_t|| = scale * ||h_t|| per token; absolute: xi = scale * N(0, I).")
@click.option("--samples", type=click.IntRange(min=1), default=2, show_default=True, help="Noise draws.")
@click.option("--batches", type=click.IntRange(min=1), default=2, show_default=True, help="Batches of texts used.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-len", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", type=click.Path(file_okay=False), required=True)
@click.option("--quiet", is_flag=True)
def noise_command(models, texts, layers_text, scale, scale_mode, samples, batches, batch_size, max_len, seed, output,
                  quiet):
    """||g(h+xi)-g(h)||^2/||g(h)||^2 of the layers above k for Gaussian noise at layer k."""
    from rmu.analysis import AnalysisError, analyze_noise
    from rmu.outputs import OutputError

    layers = parse_int_range(layers_text) if layers_text else None
    try:
        data = analyze_noise(parse_models(models), texts, output, layers=layers, scale=scale, scale_mode=scale_mode,
                             samples=samples, seed=seed, batch_size=batch_size, max_len=max_len,
                             max_batches=batches, progress=not quiet)
    except (AnalysisError, OutputError) as error:
        raise click.ClickException(str(error)) from None
    for name, entry in data["models"].items():
        click.echo(name + ": " + ", ".join(f"{r['layer']}: {r['sensitivity']:.3g}" for r in entry["layers"]))
    click.echo(f"noise.json and noise.png written to {output}")


def _token_norms():
    from rmu.analysis.token_norms import TokenNorms

    return experiment_command(TokenNorms(), "token-norms")


command.add_command(_token_norms())
