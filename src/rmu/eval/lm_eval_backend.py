"""The ``lm-eval`` backend: run tasks through lm-evaluation-harness on an in-memory model.

Our local tasks (named or from files) are written out as harness tasks -- one YAML config and one
JSON-lines data file per task -- with the prompts of :mod:`rmu.eval.prompts`: for ``letter`` scoring the
harness's own ``mmlu`` template, for ``cloze`` its ``mmlu_*_continuation`` template. The YAMLs go to
``task_dir`` if given (keep them, reuse them with ``lm_eval --include_path``) or to a temporary
folder. Names the harness knows but we do not (``wmdp_bio``, ``wmdp_cyber``, ...) run as the
harness's own tasks, which download their data from the Hugging Face hub: online only. Prefix a
name with ``lm-eval:`` to pick the harness's task over ours (``lm-eval:mmlu``).

The model and tokenizer objects are handed to lm-eval's ``HFLM`` as they are: nothing is loaded
from the hub. Per-question predictions come from the harness's logged samples.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

import yaml

from rmu.eval.prompts import cloze_description, letter_description
from rmu.eval.results import TaskResult
from rmu.eval.scoring import PER_CHARACTER, predict
from rmu.eval.tasks import LETTERS, Task, UnknownTaskError, as_task_list, load_task, unique_name, unknown_task_message
from rmu.runner import restored_mode

HARNESS_PREFIX = "lm-eval:"

# lm-eval's mmlu/wmdp template, verbatim (four choices).
MMLU_DOC_TO_TEXT = "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
ANY_CHOICES_DOC_TO_TEXT = (
    "{{question.strip()}}\n{% for choice in choices %}{{letters[loop.index0]}}. {{choice}}\n{% endfor %}Answer:"
)
CLOZE_DOC_TO_TEXT = "Question: {{question.strip()}}\nAnswer:"


def harness_task_name(task: Task, scoring: str) -> str:
    """A name that cannot collide with the harness's own tasks (``rmu_<task>_<scoring>``)."""
    stem = re.sub(r"[^a-z0-9]+", "_", task.name.lower()).strip("_") or "task"
    return f"rmu_{stem}_{scoring}"


def _description_template(scoring: str) -> str:
    # The same sentence as rmu.eval.prompts, with {{subject}} filled in per question by the harness.
    sentence = (letter_description if scoring == "letter" else cloze_description)("{{subject}}")
    return "{% if subject %}" + sentence + "{% endif %}"


def task_config(task: Task, scoring: str, data_file: Path) -> dict:
    """The harness YAML config (as a dict) of one local task."""
    config = {
        "task": harness_task_name(task, scoring),
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "num_fewshot": 0,
        "description": _description_template(scoring),
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "source": "rmu"},
    }
    if scoring == "cloze":
        config.update(doc_to_text=CLOZE_DOC_TO_TEXT, doc_to_choice="choices")
        config["metric_list"].append({"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True})
    elif all(len(q.choices) == 4 for q in task.questions):
        config.update(doc_to_text=MMLU_DOC_TO_TEXT, doc_to_choice=list(LETTERS[:4]))
    else:
        config.update(doc_to_text=ANY_CHOICES_DOC_TO_TEXT, doc_to_choice="letters")
    return config


def write_harness_task(task: Task, scoring: str, directory: str | Path) -> str:
    """Write ``<name>.jsonl`` and ``<name>.yaml`` for the harness; returns the harness task name."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    name = harness_task_name(task, scoring)
    data_file = directory / f"{name}.jsonl"
    with open(data_file, "w", encoding="utf-8") as sink:
        for q in task.questions:
            record = {"question": q.question, "choices": list(q.choices), "answer": q.answer,
                      "subject": q.subject, "letters": list(LETTERS[: len(q.choices)])}
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    config = task_config(task, scoring, data_file)
    (directory / f"{name}.yaml").write_text(_to_yaml(config), encoding="utf-8")
    return name


class _ReadableDumper(yaml.SafeDumper):
    """Writes strings with line breaks in double quotes with \\n escapes, as the harness's YAMLs do."""


def _represent_str(dumper: yaml.SafeDumper, text: str):
    style = '"' if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def _to_yaml(config: dict) -> str:
    return yaml.dump(config, Dumper=_ReadableDumper, sort_keys=False, allow_unicode=True, width=1 << 16)


def resolve(item, subject: str = "") -> Task | str:
    """A local Task, or the name of one of the harness's own tasks (``lm-eval:`` prefix, or unknown to rmu).

    ``subject`` fills in task-file questions that name none (see :func:`rmu.eval.tasks.load_task`).
    """
    if isinstance(item, str) and item.startswith(HARNESS_PREFIX):
        return item[len(HARNESS_PREFIX):]
    try:
        return load_task(item, subject=subject)
    except UnknownTaskError:
        return str(item)  # not ours: let the harness look it up (and report it if unknown)


def _continuation_text(sample: dict, choice: int) -> str:
    """The text scored for one choice, from a logged sample's arguments."""
    arguments = sample["arguments"]
    if isinstance(arguments, dict):  # {"gen_args_0": {"arg_0": context, "arg_1": continuation}, ...}
        return arguments[f"gen_args_{choice}"]["arg_1"]
    return arguments[choice][1]


def _result_from_samples(name: str, samples: list[dict], scoring: str) -> TaskResult:
    """Our TaskResult from the harness's logged samples, predicted by the rule of ``scoring``."""
    predictions, counts = [], []
    for index, sample in enumerate(samples):
        lls = [float(response[0]) for response in sample["filtered_resps"]]
        # The answer texts, for the per-character rule: each continuation without its leading space.
        texts = [_continuation_text(sample, i)[1:] for i in range(len(lls))] if scoring in PER_CHARACTER else []
        predictions.append(predict(index, lls, texts, int(sample["target"]), scoring))
        counts.append(len(lls))
    return TaskResult.from_predictions(name, scoring, predictions, counts, backend="lm-eval")


def _leaf_tasks(name: str, group_subtasks: dict) -> list[str]:
    children = group_subtasks.get(name)
    if not children:
        return [name]
    return [leaf for child in children for leaf in _leaf_tasks(child, group_subtasks)]


def run_harness(model, tokenizer, harness_names: list[str], include_path: str | None,
                include_defaults: bool, batch_size: int, limit: int | None, max_length: int | None,
                progress: bool) -> dict:
    """``lm_eval.simple_evaluate`` on the in-memory model; returns the harness's output dict."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if not progress:
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with restored_mode(model):  # HFLM switches the model to eval mode
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        # Indexing the harness's own task folder takes seconds: skip it when every task is ours.
        manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
        output = lm_eval.simple_evaluate(
            model=lm, tasks=harness_names, task_manager=manager, limit=limit, log_samples=True,
            bootstrap_iters=0,
        )
    return output


def evaluate_with_lm_eval(model, tokenizer, tasks, scoring: str = "letter", batch_size: int = 8,
                          limit: int | None = None, progress: bool = True, max_length: int | None = None,
                          task_dir: str | Path | None = None) -> dict[str, TaskResult]:
    """Like :func:`rmu.eval.evaluate`, through lm-evaluation-harness (see the module docstring)."""
    resolved = [resolve(item) for item in as_task_list(tasks)]
    with tempfile.TemporaryDirectory(prefix="rmu-lm-eval-") as scratch:
        folder = Path(task_dir) if task_dir else Path(scratch)
        ours = {}  # harness name -> our task name
        names = []
        for item in resolved:
            if isinstance(item, Task):
                task = Task(unique_name(item.name, ours.values()), item.head(limit).questions)
                harness_name = write_harness_task(task, scoring, folder)
                ours[harness_name] = task.name
            else:
                harness_name = item
            names.append(harness_name)
        theirs = [name for name in names if name not in ours]
        try:
            output = run_harness(model, tokenizer, names, str(folder) if ours else None,
                                 include_defaults=bool(theirs), batch_size=batch_size, limit=limit,
                                 max_length=max_length, progress=progress)
        except KeyError as error:  # the harness does not know the name either
            if not theirs:
                raise
            raise UnknownTaskError(f"{error.args[0] if error.args else error}. "
                                   f"{unknown_task_message(theirs[0])}") from None
        except OSError as error:  # ConnectionError included: the harness's own data lives on the hub
            if not theirs:
                raise
            raise RuntimeError(
                f"lm-evaluation-harness could not fetch the data of {', '.join(theirs)} ({error}); its own "
                f"tasks download from the Hugging Face hub, so run them online, or evaluate a local "
                f"task file instead"
            ) from error
    samples = output["samples"]
    groups = output.get("group_subtasks", {})
    results = {}
    for harness_name in names:
        leaves = [leaf for leaf in _leaf_tasks(harness_name, groups) if leaf in samples]
        name = ours.get(harness_name, harness_name)
        in_order = [s for leaf in leaves for s in sorted(samples[leaf], key=lambda s: s["doc_id"])]
        results[name] = _result_from_samples(name, in_order, scoring)
    return results
