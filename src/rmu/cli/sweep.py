"""``rmu sweep layers`` and ``rmu sweep coeff``: many unlearning runs on one loaded model."""

from __future__ import annotations

import re

import click

from rmu.config import ConfigError, load_yaml, make_config, parse_topic_sources

SCORINGS = ("letter", "cloze", "completion")  # rmu.eval.SCORINGS, without importing torch at start-up


def parse_int_range(text: str) -> list[int]:
    """'3,6,9' -> [3, 6, 9]; '3-15' -> 3..15; '3-15:3' -> 3, 6, 9, 12, 15."""
    values: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not match or (match[2] and int(match[2]) < int(match[1])) or (match[3] and int(match[3]) < 1):
            raise click.BadParameter(f"{text!r}: use a list (3,6,9), a range (3-15) or a range with a step (3-15:3)")
        first = int(match[1])
        last = int(match[2]) if match[2] else first
        values += list(range(first, last + 1, int(match[3] or 1)))
    if not values:
        raise click.BadParameter("give at least one value")
    return values


def parse_floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give comma-separated numbers, e.g. 1,2,5,10") from None
    if not values:
        raise click.BadParameter("give at least one value")
    return values


def base_options(function):
    """The options of every unlearning run of a sweep (as ``rmu unlearn``'s)."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="YAML file of unlearning options (as for rmu unlearn); flags override it."),
        click.option("--model", help="Local checkpoint folder (loaded once, whole)."),
        click.option("--forget", multiple=True, metavar="NAME=FILE", help="Forget corpus of a topic (repeat per topic)."),
        click.option("--retain", multiple=True, metavar="FILE", help="Retain corpus."),
        click.option("--steering-coeff", help="RMU coefficient c."),
        click.option("--beta", help="Adaptive RMU scale beta."),
        click.option("--adaptive-rule", type=click.Choice(["first-batch", "per-sample"])),
        click.option("--alpha", help="Retain loss weight."),
        click.option("--lr", type=float),
        click.option("--steps", type=int),
        click.option("--batch-size", type=int),
        click.option("--max-len", help="Forget truncation in tokens."),
        click.option("--retain-max-len", type=int),
        click.option("--min-len", type=int),
        click.option("--seed", type=int),
        click.option("--params", help="Trained weights in the updated layers (default mlp-out)."),
        click.option("--mask-padding/--no-mask-padding", default=None),
        click.option("--mask-first-token/--no-mask-first-token", default=None,
                     help="Exclude each row's first real token (the attention sink) from losses and norms."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"])),
        click.option("--device"),
        click.option("--forget-task", "forget_tasks", multiple=True, required=True, metavar="NAME_OR_FILE",
                     help="Questions measuring the forget topic (repeatable)."),
        click.option("--retain-task", "retain_tasks", multiple=True, required=True, metavar="NAME_OR_FILE",
                     help="Questions measuring what must stay (repeatable)."),
        click.option("--scoring", type=click.Choice(SCORINGS), default="cloze", show_default=True),
        click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions of each task."),
        click.option("--eval-batch-size", type=click.IntRange(min=1), default=8, show_default=True),
        click.option("--output", type=click.Path(file_okay=False), required=True,
                     help="Folder for sweep.json, the figure, the table and each point's run.json."),
        click.option("--overwrite", is_flag=True, help="Start over instead of resuming a sweep in --output."),
        click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Run every point on this many seeds (--seed, +1, ...): mean +- std in the table, "
                          "error bars in the plot."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


_RUN_KEYS = ("model", "steering_coeff", "beta", "adaptive_rule", "alpha", "lr", "steps", "batch_size", "max_len",
             "retain_max_len", "min_len", "seed", "params", "mask_padding", "mask_first_token", "dtype", "device")


def collect_base(config_file, forget, retain, flags: dict) -> dict:
    values = load_yaml(config_file) if config_file else {}
    if forget:
        values["forget"] = parse_topic_sources(list(forget))
    if retain:
        values["retain"] = list(retain)
    values.update({k: flags[k] for k in _RUN_KEYS if flags.get(k) is not None})
    missing = [f"--{k}" for k in ("model", "forget", "retain") if k not in values]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (give them as flags or in --config)")
    make_config(values)  # refuse bad values (nan, negative, wrong YAML types) before the model loads
    return values


@click.group("sweep")
def command() -> None:
    """Sweeps of unlearning runs (layers, coefficients), each run evaluated; resumable."""


@command.command("layers")
@click.option("--layers", "layers_text", required=True, help="Steered layers: 3,6,9 or 3-15 or 3-15:3.")
@click.option("--methods", default="rmu,adaptive", show_default=True, help="rmu, adaptive or both.")
@base_options
def layers_command(layers_text, methods, config_file, forget, retain, forget_tasks, retain_tasks, scoring, limit,
                   eval_batch_size, output, overwrite, quiet, seeds, **flags):
    """RMU and Adaptive RMU at every layer l of a range (updating l-2..l): accuracy against the layer."""
    from rmu.analysis import AnalysisError, sweep_layers
    from rmu.analysis.sweeps import layer_table

    layers = parse_int_range(layers_text)
    try:
        base = collect_base(config_file, forget, retain, flags)
        data = sweep_layers(base, layers, output, forget_tasks=forget_tasks, retain_tasks=retain_tasks,
                            methods=[m.strip() for m in methods.split(",") if m.strip()], scoring=scoring,
                            limit=limit, eval_batch_size=eval_batch_size, overwrite=overwrite, progress=not quiet,
                            seeds=seeds)
    except (AnalysisError, ConfigError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(layer_table(data))
    click.echo(f"sweep.json, layers.png and table.md written to {output}")


@command.command("coeff")
@click.option("--values", "values_text", required=True, help="Coefficients: c for rmu, beta for adaptive (1,2,5,10).")
@click.option("--method", type=click.Choice(["rmu", "adaptive"]), default="rmu", show_default=True)
@click.option("--layer", type=int, help="Steered layer (default: the config's, else 7).")
@click.option("--cosine-batches", type=click.IntRange(min=1), default=4, show_default=True,
              help="Forget batches per topic on which cos(h_l, u) is measured.")
@base_options
def coeff_command(values_text, method, layer, cosine_batches, config_file, forget, retain, forget_tasks, retain_tasks,
                  scoring, limit, eval_batch_size, output, overwrite, quiet, seeds, **flags):
    """A grid of c or beta: accuracy and cos(forget representation, u) against the coefficient."""
    from rmu.analysis import AnalysisError, sweep_coeff
    from rmu.analysis.sweeps import coeff_table

    values = parse_floats(values_text)
    try:
        base = collect_base(config_file, forget, retain, flags)
        data = sweep_coeff(base, values, output, forget_tasks=forget_tasks, retain_tasks=retain_tasks, method=method,
                           layer=layer, scoring=scoring, limit=limit, eval_batch_size=eval_batch_size,
                           cosine_batches=cosine_batches, overwrite=overwrite, progress=not quiet, seeds=seeds)
    except (AnalysisError, ConfigError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(coeff_table(data))
    click.echo(f"sweep.json, coeff.png and table.md written to {output}")
