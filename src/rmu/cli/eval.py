"""``rmu eval``: multiple-choice accuracy of a checkpoint on named tasks or task files."""

from __future__ import annotations

import click

from rmu import __version__
from rmu.config import check_device
from rmu.eval import (
    BACKENDS, RESULTS_WRITER, SCORINGS, TaskFormatError, UnknownTaskError, check_backend, evaluate, format_table,
    resolve_tasks, save_results,
)
from rmu.preflight import load_whole_model

DTYPES = ("auto", "float32", "bfloat16", "float16")


def load_tasks(names: tuple[str, ...], backend: str, subject: str) -> list:
    """Load every task before the model, so a typo fails in a second, not after loading weights."""
    try:
        return resolve_tasks(names, backend, subject)
    except UnknownTaskError as error:
        raise click.BadParameter(
            f"{error} Tasks of lm-evaluation-harness such as wmdp_bio need --backend lm-eval.", param_hint="--task",
        ) from None
    except FileNotFoundError as error:
        raise click.BadParameter(str(error), param_hint="--task") from None
    except TaskFormatError as error:
        raise click.ClickException(str(error)) from None


def _check_outputs(model_id: str, tasks: tuple[str, ...], output: str | None, task_dir: str | None) -> None:
    """Refuse outputs rmu must not or cannot write now, not after the whole evaluation (rmu.outputs)."""
    from rmu.outputs import OutputError, check_file, check_folder, check_ours, input_paths, mark

    inputs = input_paths(model_id, list(tasks))
    try:
        if output:
            check_file(output, inputs, written_by=RESULTS_WRITER)
        if task_dir:
            folder = check_folder(task_dir, inputs, what="--lm-eval-task-dir")
            check_ours(folder, "--lm-eval-task-dir")
            mark(folder, "eval")
    except OutputError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"--lm-eval-task-dir {task_dir} cannot be written: {error.strerror}") from None


@click.command(name="eval")
@click.option("--model", "model_id", required=True, metavar="PATH_OR_HUB_ID",
              help="Checkpoint folder or Hugging Face hub id.")
@click.option("--task", "tasks", required=True, multiple=True, metavar="NAME_OR_FILE",
              help="Named task (mmlu, mmlu_<subject>, mmlu_wmdp_adjacent) or a .jsonl/.json/.csv/"
                   ".parquet file; repeat for several. With --backend lm-eval also the harness's own "
                   "tasks (wmdp_bio, wmdp_cyber, lm-eval:mmlu; online).")
@click.option("--scoring", type=click.Choice(SCORINGS), default="letter", show_default=True,
              help="letter: MMLU prompt, log-likelihood of ' A'..' D'. cloze: log-likelihood of each "
                   "answer text per character. completion: the question is a sentence start, each answer "
                   "text completes it (per character).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N questions of each task.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="native", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
              help="Weights dtype; auto keeps the checkpoint's.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... [default: cuda if available, else cpu]")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code shipped with the checkpoint.")
@click.option("--subject", default="", help="Subject for task-file questions that name none "
                                            "(enters the letter prompt: '... about SUBJECT.').")
@click.option("--lm-eval-task-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the harness YAMLs and data files written for local tasks here.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Write results (with per-question predictions) to this JSON file.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def command(model_id, tasks, scoring, limit, batch_size, backend, dtype, device, trust_remote_code,
            subject, lm_eval_task_dir, output, progress):
    """Multiple-choice accuracy of a model on named tasks or task files."""
    if device is not None:
        check_device(device)  # before the tasks and the weights
    try:
        check_backend(backend, scoring)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    _check_outputs(model_id, tasks, output, lm_eval_task_dir)
    resolved = load_tasks(tasks, backend, subject)
    model, tokenizer = load_whole_model(model_id, dtype, device or "auto", trust_remote_code)  # errors: printed by rmu
    try:
        results = evaluate(model, tokenizer, resolved, scoring=scoring, batch_size=batch_size, limit=limit,
                           progress=progress, backend=backend,
                           task_dir=lm_eval_task_dir if backend == "lm-eval" else None)
    except (UnknownTaskError, RuntimeError) as error:  # the harness's own tasks: unknown, or offline
        if backend != "lm-eval":
            raise
        raise click.ClickException(str(error)) from None
    click.echo(format_table(results))
    if output:
        path = save_results(results, output, rmu_version=__version__, model=model_id, backend=backend,
                            scoring=scoring, limit=limit, batch_size=batch_size, dtype=dtype,
                            device=str(next(model.parameters()).device))
        click.echo(f"results written to {path}")

