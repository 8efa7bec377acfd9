"""``rmu attack gcg | relearn | ablate | probe | keywords``: try to get the forgotten answers back."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rmu.cli.analyze import parse_models
from rmu.cli.sweep import SCORINGS, parse_int_range
from rmu.run_folder import RUN_FILE, VECTORS_FILE

_MODELS = click.option("--model", "models", multiple=True, required=True, metavar="NAME=PATH",
                       help="A checkpoint folder to attack, e.g. base=PATH and unlearned=PATH (repeat).")
_OUTPUT = click.option("--output", type=click.Path(file_okay=False), required=True, help="Folder for JSON and PNG.")
_LIMIT = click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions.")
_QUIET = click.option("--quiet", is_flag=True, help="No progress bars.")
_SCORING = click.option("--scoring", type=click.Choice(SCORINGS), default="cloze", show_default=True,
                        help="How the evaluator scores the questions.")


def _run(function, *args, **kwargs) -> dict:
    from rmu.attacks import AttackError
    from rmu.outputs import OutputError

    try:
        return function(*args, **kwargs)
    except (AttackError, FileNotFoundError, OutputError) as error:
        raise click.ClickException(str(error)) from None


@click.group("attack")
def command() -> None:
    """Attacks on unlearned models: adversarial suffixes, relearning, ablation, probes, keywords."""


@command.command("gcg")
@_MODELS
@click.option("--questions", required=True, metavar="NAME_OR_FILE", help="Forget questions.")
@click.option("--tokens", "n_tokens", type=click.IntRange(min=1), default=20, show_default=True, help="Suffix length.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--candidates", type=click.IntRange(min=1), default=128, show_default=True,
              help="Candidate substitutions evaluated per step.")
@click.option("--top-k", type=click.IntRange(min=1), default=64, show_default=True, help="Tokens per position.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Candidates per forward pass.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scoring", type=click.Choice(SCORINGS), default="letter", show_default=True,
              help="Prompt and target: the answer letter (letter) or the answer text (cloze, completion).")
@_LIMIT
@_OUTPUT
@_QUIET
def gcg_command(models, questions, n_tokens, steps, candidates, top_k, batch_size, seed, scoring, limit, output,
                quiet):
    """Greedy Coordinate Gradient suffixes that push each forget question's correct answer; same budget per model."""
    from rmu.attacks import gcg_attack

    data = _run(gcg_attack, parse_models(models), questions, output, n_tokens=n_tokens, steps=steps,
                candidates=candidates, top_k=top_k, batch_size=batch_size, seed=seed, limit=limit,
                scoring=scoring, progress=not quiet)
    budget = data["budget"]
    click.echo(f"budget per question: {budget['steps']} steps x {budget['candidates_per_step']} candidates")
    for name, entry in data["models"].items():
        click.echo(f"{name}: loss {entry['mean_initial_loss']:.3f} -> {entry['mean_best_loss']:.3f}, "
                   f"{scoring} accuracy {entry['accuracy_before']:.3f} -> {entry['accuracy_after']:.3f} with the suffix"
                   + (f", {entry['accuracy_with_other_suffix']:.3f} with another question's suffix"
                      if entry["accuracy_with_other_suffix"] is not None else ""))
    click.echo(f"gcg.json and gcg.png written to {output}")


@command.command("relearn")
@_MODELS
@click.option("--questions", required=True, metavar="NAME_OR_FILE", help="Forget questions.")
@click.option("--forget-texts", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Forget corpus (the first K documents are used).")
@click.option("--other-texts", type=click.Path(exists=True, dir_okay=False), help="Unrelated corpus (control run).")
@click.option("--k", type=click.IntRange(min=1), default=8, show_default=True, help="Documents to fine-tune on.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0), default=1e-5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-len", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--params", multiple=True, default=("all",), show_default=True,
              help="Glob pattern(s) of parameter names to train, or 'all'.")
@_SCORING
@_LIMIT
@_OUTPUT
@_QUIET
def relearn_command(models, questions, forget_texts, other_texts, k, steps, lr, batch_size, max_len, eval_every,
                    params, scoring, limit, output, quiet):
    """Fine-tune on K forget documents (and on unrelated text); forget accuracy against the step."""
    from rmu.attacks import relearn_attack

    data = _run(relearn_attack, parse_models(models), questions, forget_texts, other_texts, output, k=k, steps=steps,
                lr=lr, batch_size=batch_size, max_len=max_len, eval_every=eval_every, params=list(params),
                scoring=scoring, limit=limit, progress=not quiet)
    for name, entry in data["models"].items():
        for corpus, curve in entry.items():
            points = ", ".join(f"{p['step']}: {p['accuracy']:.3f}" for p in curve["points"])
            click.echo(f"{name} on {corpus}: {points}")
    click.echo(f"relearn.json and relearn.png written to {output}")


def _control_vectors(models: dict[str, str]) -> dict[str, Path]:
    found = {}
    for name, folder in models.items():
        path = Path(folder) / VECTORS_FILE
        if not path.is_file():
            raise click.BadParameter(f"{folder} has no control_vectors.safetensors (is it an rmu unlearn output?)",
                                     param_hint="--use-u")
        found[name] = path
    return found


def _layer_from_run(models: dict[str, str]) -> int | None:
    for folder in models.values():
        run = Path(folder) / RUN_FILE
        if run.is_file():
            return int(json.loads(run.read_text())["config"]["layer"])
    return None


@command.command("ablate")
@_MODELS
@click.option("--questions", required=True, metavar="NAME_OR_FILE", help="Forget questions.")
@click.option("--retain-questions", metavar="NAME_OR_FILE", help="Retain questions (what the ablation costs).")
@click.option("--base", type=click.Path(exists=True, file_okay=False), help="Base model, for the diff direction.")
@click.option("--forget-texts", type=click.Path(exists=True, dir_okay=False),
              help="Forget corpus, for the diff direction.")
@click.option("--use-u", is_flag=True, help="Also project out u from each model folder's control_vectors.safetensors.")
@click.option("--topic", help="Forget topic of u when there are several.")
@click.option("--layer", type=click.IntRange(min=0), help="Steered layer (default: from the model's run.json).")
@click.option("--project-layers", "project_text", help="Layers whose output is projected (default: --layer).")
@click.option("--batches", type=click.IntRange(min=1), default=8, show_default=True, help="Corpus batches for diff.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-len", type=click.IntRange(min=1), default=128, show_default=True)
@_SCORING
@_LIMIT
@_OUTPUT
@_QUIET
def ablate_command(models, questions, retain_questions, base, forget_texts, use_u, topic, layer, project_text, batches,
                   batch_size, max_len, scoring, limit, output, quiet):
    """Project the steering direction (mean activation difference, or u) out of layer l; recovered accuracy."""
    from rmu.attacks import ablate_attack

    models = parse_models(models)
    if base is None and not use_u:
        raise click.UsageError("give --base with --forget-texts (diff direction) and/or --use-u")
    if base is not None and forget_texts is None:
        raise click.UsageError("--base needs --forget-texts to estimate the diff direction")
    layer = layer if layer is not None else _layer_from_run(models)
    if layer is None:
        raise click.UsageError("give --layer (no run.json in the model folders to read it from)")
    data = _run(ablate_attack, models, questions, output, layer=layer, base=base, forget_texts=forget_texts,
                control_vectors=_control_vectors(models) if use_u else None, retain_questions=retain_questions,
                project_layers=parse_int_range(project_text) if project_text else None, topic=topic,
                batch_size=batch_size, max_len=max_len, max_batches=batches, scoring=scoring, limit=limit,
                progress=not quiet)
    if "base" in data:
        click.echo(f"base: forget {data['base']['forget']:.3f}")
    for name, entry in data["models"].items():
        parts = [f"none {entry['none']['forget']:.3f}"]
        parts += [f"{k} {v['forget']:.3f}" for k, v in entry["directions"].items()]
        click.echo(f"{name}: forget accuracy with direction removed: " + ", ".join(parts))
    click.echo(f"ablate.json and ablate.png written to {output}")


@command.command("probe")
@_MODELS
@click.option("--questions", required=True, metavar="NAME_OR_FILE", help="Forget questions.")
@click.option("--prompt", type=click.Choice(SCORINGS), default="letter", show_default=True,
              help="letter or cloze: predict the correct choice's index; completion: tell true statements from false.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.3,
              show_default=True)
@click.option("--splits", type=click.IntRange(min=1), default=5, show_default=True, help="Random train/test splits.")
@click.option("--seed", type=int, default=0, show_default=True)
@_LIMIT
@_OUTPUT
@_QUIET
def probe_command(models, questions, prompt, test_fraction, splits, seed, limit, output, quiet):
    """Linear probe per layer predicting the correct choice of forget questions."""
    from rmu.attacks import probe_attack

    data = _run(probe_attack, parse_models(models), questions, output, prompt=prompt, test_fraction=test_fraction,
                splits=splits, seed=seed, limit=limit, progress=not quiet)
    click.echo(f"majority class: {data['majority_class']:.3f}")
    for name, entry in data["models"].items():
        click.echo(f"{name}: best layer {entry['best_layer']} ({entry['best_accuracy']:.3f}); per layer "
                   + " ".join(f"{a:.2f}" for a in entry["accuracy"]))
    click.echo(f"probe.json and probe.png written to {output}")


@command.command("keywords")
@_MODELS
@click.option("--questions", required=True, metavar="NAME_OR_FILE", help="Retain questions.")
@click.option("--keywords", "keyword_file", type=click.Path(exists=True, dir_okay=False),
              help="Forget keywords, one a line.")
@click.option("--keyword", "keyword_list", multiple=True, help="A forget keyword (repeatable).")
@click.option("--template", "templates", multiple=True,
              help="Sentence with {keyword}, e.g. '{keyword} is a chemical element.' (repeat; default: three "
                   "phrasings --keyword-robust never trains on, see rmu.attacks.keywords.HELD_OUT_TEMPLATES).")
@click.option("--position", "positions", type=click.Choice(["before", "after", "inside"]), multiple=True,
              help="Where the sentence goes: before the question, after it, or before its last word "
                   "(repeat; every template is tried at every position; default before).")
@click.option("--base", default="base", show_default=True, metavar="NAME",
              help="The model (one of --model) whose own drop the others' drops are compared with.")
@click.option("--seed", type=int, default=0, show_default=True)
@_SCORING
@_LIMIT
@_OUTPUT
@_QUIET
def keywords_command(models, questions, keyword_file, keyword_list, templates, positions, base, seed, scoring, limit,
                     output, quiet):
    """Retain accuracy with a forget keyword inserted into each question, per template and position."""
    from rmu.attacks import keyword_attack

    if not keyword_file and not keyword_list:
        raise click.UsageError("give --keywords FILE or --keyword WORD")
    keywords = keyword_file if keyword_file else list(keyword_list)
    data = _run(keyword_attack, parse_models(models), questions, keywords, output, templates=templates or None,
                positions=positions or ("before",), base=base, seed=seed, scoring=scoring, limit=limit,
                progress=not quiet)
    for name, entry in data["models"].items():
        against = "" if entry["excess_drop"] is None else f" (base drop {entry['base_drop']:.3f}, " \
                                                          f"excess {entry['excess_drop']:+.3f})"
        click.echo(f"{name}: retain {entry['retain']:.3f}, with keyword {entry['retain_with_keyword']:.3f} "
                   f"(mean of {len(entry['variants'])}), drop {entry['drop']:.3f}{against}")
    click.echo(f"keywords.json and keywords.png written to {output}")
