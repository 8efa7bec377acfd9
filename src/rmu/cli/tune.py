"""``rmu tune``: a constrained Optuna search for unlearning settings (see rmu.tune)."""

from __future__ import annotations

import click

from rmu.cli.options import MANY_RUNS, run_options
from rmu.cli.options import collect_base, parse_int_range
from rmu.experiments.values import SCORINGS

# The run options a study fixes for every trial (it draws method, layer, steps, lr, alpha, c or beta, noise).
_FIXED = ("batch_size", "max_len", "retain_max_len", "min_len", "seed", "mask_padding", "mask_first_token", "loss_dims",
          "dtype", "device", "auto_lr")
_AS_A_STUDY = {
    **MANY_RUNS,
    "config_file": dict(help="YAML file of unlearning options (as for rmu unlearn): the fixed part of every trial."),
    "steps": dict(help="Longest run (trials draw steps from a quarter of it up to it)."),
    "layer": dict(help="The rule's layer, where the study starts (default 7)."),
    "method": dict(help="The rule's method, where the study starts."),
}


def _search_range(context, parameter, text):
    from rmu.tune_ranges import parse_range

    try:
        return parse_range(text, "--" + parameter.name.replace("_", "-"))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _range_options(function):
    """--lr-range, --alpha-range, --coeff-range (issue #11): the study's search ranges, factors of the rule."""
    from rmu.tune_ranges import ALPHA_RANGE, COEFF_RANGE, LR_RANGE

    for name, default, what in (("coeff_range", COEFF_RANGE, "c / the layer's forget norm (rmu) or beta (adaptive)"),
                                ("alpha_range", ALPHA_RANGE, "alpha as a factor of the scale rule's alpha"),
                                ("lr_range", LR_RANGE, "lr as a factor of the scale rule's lr")):
        function = click.option("--" + name.replace("_", "-"), name, metavar="LOW,HIGH", callback=_search_range,
                                default=f"{default[0]:g},{default[1]:g}", show_default=True,
                                help=f"Search range of {what} (log scale).")(function)
    return function


@click.command("tune")
@run_options("config_file", "model", "forget", "retain", changes=_AS_A_STUDY)
@click.option("--forget-questions", "forget_tasks", multiple=True, required=True, metavar="FILE_OR_NAME",
              help="Questions the unlearned model should fail (repeatable).")
@click.option("--retain-questions", "retain_tasks", multiple=True, required=True, metavar="FILE_OR_NAME",
              help="Questions it must still answer (repeatable).")
@click.option("--general-text", type=click.Path(dir_okay=False),
              help="Text file (one text a line) whose perplexity may rise at most --max-perplexity-rise.")
@click.option("--trials", type=click.IntRange(min=1), default=15, show_default=True,
              help="Finished trials of the study in total (all processes sharing it together).")
@click.option("--timeout", type=click.FloatRange(min=1), help="Stop starting trials after this many seconds.")
@click.option("--max-retain-drop", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Constraint: retain accuracy >= base - this.")
@click.option("--max-perplexity-rise", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="Constraint with --general-text: perplexity <= base x (1 + this).")
@click.option("--storage", help="Optuna storage URL shared by several processes or machines "
                                "(sqlite:///study.db, postgresql://...); default DIR/study.db.")
@click.option("--study-name", default="rmu-tune", show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rerun the best settings on this many seeds; mean and std in summary.json.")
# --select-top (issue #11)
@click.option("--select-top", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --seeds K >= 2: rerun the N best trials on the K seeds and keep the one whose "
                   "tuning-half scores hold across them (N x K runs, kept in the study for the next call).")
@click.option("--holdout", is_flag=True,
              help="Tune on a seeded random half of each question file; report the other half.")
@click.option("--layers", "layers_text", help="Candidate steered layers (3,6,9 or 3-9); default l-2, l, l+2.")
@click.option("--methods", default="rmu,adaptive", show_default=True, help="rmu, adaptive or both.")
@click.option("--no-pruning", is_flag=True, help="Run every trial to the end.")
@click.option("--keyword-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Also count, with this weight, the retain accuracy lost when a forget keyword sentence comes "
                   "before each retain question (beyond the base model's loss); trials may use --keyword-robust.")
@click.option("--keywords", "keywords_file", type=click.Path(exists=True, dir_okay=False),
              help="Forget keywords, one a line, for --keyword-weight (default: found in the corpora).")
@click.option("--keyword-template", "keyword_templates", multiple=True, metavar="TEMPLATE",
              help="--keyword-weight: a sentence with {keyword} put before each retain question, e.g. "
                   "'{keyword} is a chemical element.' (repeatable; default: three held-out phrasings of "
                   "rmu attack keywords that do not name the topic).")
# --forget-measure (issue #11)
@click.option("--forget-measure", type=click.Choice(["accuracy", "probability"]), default="accuracy",
              show_default=True,
              help="What the objective's forget term measures on the tuning half: accuracy, or the mean weight the "
                   "scoring rule puts on the right answer (softmax over the choices), which keeps rewarding settings "
                   "that leave less knowledge once accuracy is at chance. Accuracy is recorded either way.")
@_range_options
@run_options("steps", "layer", "method", *_FIXED, changes=_AS_A_STUDY)
@click.option("--scoring", type=click.Choice(SCORINGS), default="cloze", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions of each file.")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--output", type=click.Path(file_okay=False), required=True,
              help="Folder of the study: study.db, trials.json, best.yaml, pareto.png, summary.json.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(config_file, forget, retain, forget_tasks, retain_tasks, general_text, trials, timeout, max_retain_drop,
            max_perplexity_rise, storage, study_name, seeds, select_top, holdout, layers_text, methods, no_pruning,
            keyword_weight, keywords_file, keyword_templates, scoring, limit,
            eval_batch_size, output, quiet, layer, method, lr_range, alpha_range, coeff_range, forget_measure,
            **flags):
    """Search unlearning settings that forget the topic and keep the rest (Optuna, resumable)."""
    from rmu.tune import TuneSettings, TuneStudy, tune

    # rmu's own errors (a bad option, a folder it must not write, ...) are printed in one line by
    # the command group (rmu.cli), with the traceback under --debug.
    base = collect_base(config_file, forget, retain, flags)
    base.update({k: v for k, v in (("layer", layer), ("method", method)) if v is not None})
    settings = TuneSettings(
        trials=trials, timeout=timeout, max_retain_drop=max_retain_drop, max_perplexity_rise=max_perplexity_rise,
        seeds=seeds, layers=tuple(parse_int_range(layers_text)) if layers_text else None,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()), scoring=scoring, limit=limit,
        eval_batch_size=eval_batch_size, holdout=holdout, storage=storage, study_name=study_name,
        prune=not no_pruning, keyword_weight=keyword_weight, keywords=keywords_file,
        keyword_templates=tuple(keyword_templates) or None,
        select_top=select_top, lr_range=lr_range, alpha_range=alpha_range, coeff_range=coeff_range,
        forget_measure=forget_measure)
    summary = tune(base, output, forget_tasks=forget_tasks, retain_tasks=retain_tasks, general_text=general_text,
                   settings=settings, progress=not quiet)
    for line in TuneStudy().summary(summary):
        click.echo(line)
    click.echo(f"trials.json, best.yaml, pareto.png and summary.json written to {output}")
