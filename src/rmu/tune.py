"""``rmu tune``: a constrained Optuna search for unlearning settings on the user's own questions.

The model is loaded once. Each trial puts the original weights back, unlearns with the trial's
settings (:func:`rmu.engine.unlearn`, in memory), and scores the model on the given questions
(:func:`rmu.eval.evaluate`). The goal and the constraint:

* objective (minimised): |forget accuracy - chance| + ``RETAIN_WEIGHT`` x max(0, base retain - retain)
  (with ``forget_measure`` "probability", issue #11: |mean answer probability - chance| in its first term,
  where a question's answer probability is the softmax over its choices of the scores the scoring rule
  decides by, :func:`rmu.eval.scoring.answer_probability`; accuracy is kept in every record),
  plus, with ``keyword_weight`` w > 0 (issue #12), w x max(0, keyword drop - the base model's keyword
  drop), where the keyword drop is retain accuracy minus retain accuracy with a forget keyword
  sentence before each retain question (the three held-out templates of ``rmu attack keywords``,
  keywords from ``keywords`` or found in the corpora as ``--keyword-robust`` finds them), and the
  search space gains ``keyword_robust`` in {no, yes} (the first two trials: the rule without and
  with it);
* constraints (feasible when <= 0, Optuna's convention): retain accuracy >= base - max_retain_drop,
  and, with general text, perplexity <= base x (1 + max_perplexity_rise).

The sampler is Optuna's TPE; each trial sets its constraint values (``Trial.set_constraint``) and
TPE models the feasible region as well as the objective. Half way through each run the questions are
scored once more (reported to Optuna as step ``HALF_WAY`` = 50, percent of the run, and kept in
trials.json) and a trial stops there (``PRUNED``) when it is already hopeless: its retain accuracy is
below base - ``PRUNE_RETAIN_FACTOR`` x max_retain_drop. The forget accuracy half way is not used: on
some topics forgetting comes late (SmolLM2, animals: the scale rule stood at 0.83 half way and ended
at 0.36, docs/tuning.md), so Optuna's median pruner, which compared half-way objectives, stopped
trials that had not yet had their chance; a retain loss that large rarely comes back.

The search space is written relative to the scale rule (:mod:`rmu.scale`), so its ranges follow
the model's measured norms and not Zephyr's: for each candidate layer the scale rule's calibration
(:func:`rmu.engine.calibrate` at the study's longest run: the one-step probe and, with ``--auto-lr
steps``, the default, the real-steps probes' lr factor) measures the layer's norms and the rule's lr and
alpha, then a trial draws

* method in {rmu, adaptive}, layer among the candidates, steps in [steps/4, steps],
* ``coeff_ratio`` in [1, 8] (log; ``coeff_range``): c = ratio x the layer's forget norm (RMU) or beta = ratio,
* ``lr_factor`` in [0.2, 10] (log; ``lr_range``): lr = factor x the rule's lr for that layer and step count
  (the one-step rule's lr at the trial's steps x the real-steps factor measured at the longest run),
* ``alpha_factor`` in [0.1, 10] (log; ``alpha_range``): alpha = factor x the rule's alpha,
* ``noise_ratio`` in [0, 0.5]: noise = ratio x the retain states' per-coordinate scale
  (retain norm / sqrt(width)).

The first trial is the rule itself (factors 1, ratio 2, the given method/layer/steps; brought into the
ranges when they exclude it), so a study starts from the scale rule. When the best trial sits at an
edge of a range, summary.json's ``range_edges`` says so and names the option that widens it
(:mod:`rmu.tune_ranges`). The study lives in ``DIR/study.db`` (SQLite) unless ``storage`` names
another database: a rerun continues it, and several processes or machines pointing at one database
work on one study (Optuna's distributed mode; ``trials`` is the study's total, enforced by
``MaxTrialsCallback``). Outputs: ``trials.json``, ``best.yaml`` (runs as is with ``rmu unlearn
--config``), ``pareto.png``, ``summary.json`` (base, best, the best settings rerun on ``seeds``
seeds: mean and std, on the tuning questions and on the held-out half with ``holdout``). With
``select_top`` N > 1 the N best trials each run on the ``seeds`` seeds and the best one is the one
whose tuning scores hold across them (summary.json ``selection``; see "choosing settings that hold
across seeds" below); those reruns are kept in the study, so a second call does not repeat them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from rmu.progress import bar as tqdm

from rmu import fingerprint, scale, tune_ranges
from rmu.analysis.common import load_full_model, read_json, write_json
from rmu.analysis.sweeps import sweep_inputs
from rmu.config import ConfigError, UnlearnConfig, make_config
from rmu.engine import UnlearnError, calibrate, corpus_steps, unlearn
from rmu.errors import RmuError
from rmu.eval import evaluate, perplexity
from rmu.eval.scoring import answer_probability
from rmu.eval.tasks import Task, load_task
from rmu.experiments.base import Experiment, Settings, Table
from rmu.outputs import writes_folder
from rmu.structure import check_layer, find_structure

RETAIN_WEIGHT = 0.5
HALF_WAY = 50  # the step, in percent of the run, at which trials are scored once more
PRUNE_RETAIN_FACTOR = 2.0  # half way, a trial this many allowed drops below base retain is stopped
STUDY_FILE = "study.db"
TRIALS_FILE = "trials.json"
BEST_FILE = "best.yaml"
SUMMARY_FILE = "summary.json"
PARETO_FILE = "pareto.png"
METHODS = ("rmu", "adaptive")
# The scale rule's own values of the drawn factors: the first trial of a study.
_RULE_FACTORS = {"coeff_ratio": scale.COEFF_RATIO, "lr_factor": 1.0, "alpha_factor": 1.0}
# Options of the base configuration that a tune sets itself.
_TRIAL_OPTIONS = ("output", "resume", "save_every", "overwrite", "auto")


class TuneError(RmuError, RuntimeError):
    """The study cannot run; the message says why and what to do."""


@dataclass
class TuneSettings:
    trials: int = 15  # total finished trials of the study (all processes together)
    timeout: float | None = None  # seconds for this process's trials
    max_retain_drop: float = 0.05
    max_perplexity_rise: float = 0.2
    seeds: int = 1
    layers: tuple[int, ...] | None = None  # candidate layers (default: the base layer and +-2)
    methods: tuple[str, ...] = METHODS
    scoring: str = "cloze"
    limit: int | None = None
    eval_batch_size: int = 8
    holdout: bool = False  # tune on a seeded random half of each question file, report the other half
    storage: str | None = None
    study_name: str = "rmu-tune"
    prune: bool = True
    keyword_weight: float = 0.0  # > 0: the objective counts the retain accuracy lost to forget keywords
    keywords: str | None = None  # keyword file (one a line); default: found from the forget and retain corpora
    # sentences with {keyword} the keyword objective puts before each retain question; default: the three
    # held-out templates of rmu attack keywords, which do not name the topic
    keyword_templates: tuple[str, ...] | None = None
    # --select-top (issue #11): > 1 reruns the N best trials on the --seeds seeds and keeps the one whose
    # tuning-half scores hold across them (not part of the study: the trials do not depend on it)
    select_top: int = 1
    # search ranges (issue #11, --lr-range/--alpha-range/--coeff-range): factors of the scale rule's values,
    # drawn on a log scale; the defaults are the ranges of studies begun before they could be set
    lr_range: tuple[float, float] = tune_ranges.LR_RANGE
    alpha_range: tuple[float, float] = tune_ranges.ALPHA_RANGE
    coeff_range: tuple[float, float] = tune_ranges.COEFF_RANGE
    # --forget-measure (issue #11): what the objective's forget term measures. "accuracy" stops rewarding a
    # trial once its tuning-half accuracy reaches chance, whatever the model still knows below the argmax;
    # "probability" (the mean answer probability) keeps rewarding the trial that leaves less knowledge
    forget_measure: str = "accuracy"


# ---- questions -------------------------------------------------------------------------------------

def split_halves(task: Task, seed: int = 0) -> tuple[Task, Task]:
    """The tuning half and the held-out half of a task: a seeded random half each, order kept.

    Random rather than alternate questions: files often alternate question kinds (the demo asks
    "the symbol of X" then "the element with symbol Y"), which alternation would put in different halves.
    """
    import random

    order = list(range(len(task.questions)))
    random.Random(seed).shuffle(order)
    tuning = sorted(order[: (len(order) + 1) // 2])
    held_out = sorted(order[(len(order) + 1) // 2:])
    return (Task(task.name, [task.questions[i] for i in tuning]),
            Task(task.name + "_holdout", [task.questions[i] for i in held_out]))


def _chance(tasks: Sequence[Task]) -> float:
    questions = [q for t in tasks for q in t.questions]
    return sum(1 / len(q.choices) for q in questions) / max(len(questions), 1)


def study_keywords(base: dict, settings: TuneSettings) -> list[str]:
    """The forget keywords the keyword objective inserts: ``settings.keywords`` or those found in the
    base configuration's corpora by ``--keyword-robust``'s rule (rmu.keywords.extract_keywords)."""
    from rmu.data import read_corpus
    from rmu.keywords import extract_keywords, read_keyword_file

    if settings.keywords:
        return read_keyword_file(settings.keywords)
    config = make_config(base)
    retain = [text for source in dict.fromkeys(config.retain) for text in read_corpus(source, config.min_len)]
    found = [k.word for source in config.forget.values()
             for k in extract_keywords(read_corpus(source, config.min_len), retain)]
    if not found:
        raise TuneError("--keyword-weight: no forget keyword found in the corpora; give --keywords FILE")
    return list(dict.fromkeys(found))


def keyword_tasks(retain: list[Task], keywords: list[str], templates: Sequence[str] | None = None) -> list[Task]:
    """The retain questions with one forget keyword sentence before each, once per template
    (default: the held-out templates of ``rmu attack keywords``)."""
    from rmu.attacks.keywords import HELD_OUT_TEMPLATES, insert_keywords

    return [dataclasses.replace(insert_keywords(task, keywords, template, seed=index), name=f"{task.name}+kw{index}")
            for task in retain for index, template in enumerate(templates or HELD_OUT_TEMPLATES)]


def check_ranges(settings: TuneSettings) -> None:
    """``--lr-range``, ``--alpha-range``, ``--coeff-range``: positive, LOW < HIGH."""
    for field, option in tune_ranges.RANGES.values():
        problem = tune_ranges.range_problem(getattr(settings, field), option)
        if problem:
            raise TuneError(problem)


def check_forget_measure(settings: TuneSettings) -> None:
    if settings.forget_measure not in FORGET_MEASURES:
        raise TuneError(f"--forget-measure {settings.forget_measure!r}: choose one of {', '.join(FORGET_MEASURES)}")


def check_keyword_templates(settings: TuneSettings) -> None:
    """``--keyword-template``: each a sentence with ``{keyword}`` and no other field, used with --keyword-weight."""
    if settings.keyword_templates is None:
        return
    if settings.keyword_weight <= 0:
        raise TuneError("--keyword-template is used by the keyword objective; add --keyword-weight W (> 0) or drop "
                        "--keyword-template")
    if not settings.keyword_templates:
        raise TuneError("--keyword-template: give at least one template, e.g. '{keyword} is a chemical element.'")
    for template in settings.keyword_templates:
        try:
            filled = template.format(keyword="x")
        except (KeyError, IndexError, ValueError):
            filled = None
        if "{keyword}" not in template or filled is None:
            raise TuneError(f"--keyword-template {template!r}: write a sentence with {{keyword}} and no other "
                            "{...} field, e.g. '{keyword} is a chemical element.'")


class _Scorer:
    """Accuracy on the forget and retain questions (and perplexity) of the model as it is now; with
    ``keywords``, also on the retain questions with a forget keyword sentence before each."""

    def __init__(self, model, tokenizer, forget: list[Task], retain: list[Task], general_text: list[str] | None,
                 settings: TuneSettings, keywords: list[str] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.forget = [t.head(settings.limit) for t in forget]
        self.retain = [t.head(settings.limit) for t in retain]
        self.keywords = keywords
        self.retain_keyword = keyword_tasks(self.retain, keywords, settings.keyword_templates) if keywords else []
        self.general_text = general_text
        self.settings = settings
        self.chance = _chance(self.forget)

    def _results(self, tasks: list[Task]) -> dict:
        return evaluate(self.model, self.tokenizer, tasks, scoring=self.settings.scoring,
                        batch_size=self.settings.eval_batch_size, progress=False)

    def _accuracy(self, tasks: list[Task], results: dict | None = None) -> float:
        results = results if results is not None else self._results(tasks)
        count = sum(r.count for r in results.values())
        return sum(r.accuracy * r.count for r in results.values()) / count

    def _answer_probability(self, tasks: list[Task], results: dict) -> float:
        """The mean over every question of the weight the scoring rule puts on its answer."""
        values = [answer_probability(question, prediction.loglikelihoods, self.settings.scoring)
                  for task in tasks for question, prediction in zip(task.questions, results[task.name].predictions)]
        return sum(values) / len(values)

    def __call__(self, with_perplexity: bool = True) -> dict:
        forget = self._results(self.forget)
        scores = {"forget_accuracy": self._accuracy(self.forget, forget),
                  "forget_probability": self._answer_probability(self.forget, forget),
                  "retain_accuracy": self._accuracy(self.retain)}
        if self.retain_keyword:
            scores["retain_keyword_accuracy"] = self._accuracy(self.retain_keyword)
        if with_perplexity and self.general_text:
            scores["perplexity"] = perplexity(self.model, self.tokenizer, self.general_text,
                                              batch_size=self.settings.eval_batch_size, progress=False)
        return scores


# ---- the objective and the constraint -------------------------------------------------------------

FORGET_MEASURES = {"accuracy": "forget_accuracy", "probability": "forget_probability"}


def objective_value(scores: dict, base: dict, chance: float, keyword_weight: float = 0.0,
                    forget_measure: str = "accuracy") -> float:
    forget = scores[FORGET_MEASURES[forget_measure]]
    value = abs(forget - chance) + RETAIN_WEIGHT * max(0.0, base["retain_accuracy"] - scores["retain_accuracy"])
    if keyword_weight > 0:
        value += keyword_weight * max(0.0, keyword_drop(scores) - keyword_drop(base))
    return value


def keyword_drop(scores: dict) -> float:
    """Retain accuracy lost when a forget keyword sentence comes before each retain question."""
    return scores["retain_accuracy"] - scores["retain_keyword_accuracy"]


def constraint_values(scores: dict, base: dict, settings: TuneSettings) -> list[float]:
    values = [base["retain_accuracy"] - settings.max_retain_drop - scores["retain_accuracy"]]
    if base.get("perplexity") and scores.get("perplexity") is not None:
        values.append(scores["perplexity"] / base["perplexity"] - 1 - settings.max_perplexity_rise)
    return values


def hopeless(half_way: dict, base: dict, settings: TuneSettings) -> bool:
    """A trial not worth finishing: half way, its retain accuracy is already far below the floor."""
    return half_way["retain_accuracy"] < base["retain_accuracy"] - PRUNE_RETAIN_FACTOR * settings.max_retain_drop


def _set_constraints(trial, values: list[float]) -> None:
    """Optuna's constraint values (TPE reads them) and a copy for trials.json."""
    trial.set_user_attr("constraints", values)
    for name, value in zip(("retain_floor", "perplexity_rise"), values):
        trial.set_constraint(name, value)


# ---- the study -------------------------------------------------------------------------------------

class _Tuner:
    def __init__(self, base: dict, output: Path, scorer: _Scorer, settings: TuneSettings, progress: bool):
        self.base_values, self.output, self.scorer, self.settings = base, output, scorer, settings
        self.model, self.tokenizer = scorer.model, scorer.tokenizer
        self.progress = progress
        structure = find_structure(self.model)
        self.depth, self.width = structure.num_layers, structure.hidden_size
        base_layer = int(base.get("layer", 7))
        layers = settings.layers or tuple(sorted({max(0, min(self.depth - 1, base_layer + d)) for d in (-2, 0, 2)}))
        check_layer(list(layers), self.depth, error=TuneError)
        self.layers = tuple(layers)
        self.base_layer = base_layer if base_layer in self.layers else self.layers[0]
        self.max_steps = int(base.get("steps", 150))
        # Every weight any trial may train, to put back after each trial (pruned runs end without a result).
        touched = {id(p) for layer in self.layers for i in range(max(0, layer - 2), layer + 1)
                   for p in structure.layers[i].parameters()}
        self.backup = {name: p.detach().clone() for name, p in self.model.named_parameters() if id(p) in touched}
        self.calibrations: dict[int, dict] = {}
        self.baseline: dict = {}

    def restore(self) -> None:
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.backup.items():
                parameters[name].copy_(value)

    def calibration(self, layer: int) -> dict:
        """The scale rule's measurements at ``layer`` for the study's longest run (``engine.calibrate``:
        the one-step probe and, with ``--auto-lr steps``, the real-steps probes; weights put back)."""
        if layer not in self.calibrations:
            values = dict(self.base_values, layer=layer, update_layers=None, steps=self.max_steps,
                          auto=["lr", "alpha", "coeff"], method="rmu")
            try:
                self.calibrations[layer] = calibrate(make_config(values), model=self.model, tokenizer=self.tokenizer)
            finally:
                self.restore()
        return self.calibrations[layer]

    def trial_values(self, params: dict) -> dict:
        """The unlearning options of a trial's parameters (rule x factors)."""
        calibration = self.calibration(params["layer"])
        topics = calibration["topics"]
        steps = params["steps"]
        topic_steps = max(1, math.ceil(steps / len(topics)))
        # the one-step rule at the trial's length, times what the real-steps probes found it lacked
        real_steps = calibration.get("real_steps", {}).get("factor", 1.0)
        rule_lr = real_steps * min(scale.REACH * t["distance"] / (topic_steps * max(t["approach"], 1e-30))
                                   for t in topics)
        values = dict(self.base_values, method=params["method"], layer=params["layer"], update_layers=None,
                      steps=steps, lr=scale.significant(params["lr_factor"] * rule_lr),
                      alpha=[scale.significant(params["alpha_factor"] * t["alpha"]) for t in topics])
        if params["method"] == "rmu":
            values["steering_coeff"] = [scale.steering_coefficient(params["coeff_ratio"], t["forget_norm"])
                                        for t in topics]
        else:
            values["beta"] = scale.significant(params["coeff_ratio"], 4)
        retain_scale = min(t["retain_norm"] for t in topics) / math.sqrt(self.width)
        values["noise"] = scale.significant(params["noise_ratio"] * retain_scale) if params["noise_ratio"] > 0 else 0.0
        if params.get("keyword_robust"):
            values.update(keyword_robust=True, keywords=self.settings.keywords)
        return values

    def suggest(self, trial) -> dict:
        return {
            "method": trial.suggest_categorical("method", list(self.settings.methods)),
            "layer": trial.suggest_categorical("layer", list(self.layers)),
            "steps": trial.suggest_int("steps", max(1, self.max_steps // 4), self.max_steps, log=True),
            "coeff_ratio": trial.suggest_float("coeff_ratio", *self.settings.coeff_range, log=True),
            "lr_factor": trial.suggest_float("lr_factor", *self.settings.lr_range, log=True),
            "alpha_factor": trial.suggest_float("alpha_factor", *self.settings.alpha_range, log=True),
            "noise_ratio": trial.suggest_float("noise_ratio", 0.0, 0.5),
            **({"keyword_robust": trial.suggest_categorical("keyword_robust", [False, True])}
               if self.settings.keyword_weight > 0 else {}),
        }

    def rule_params(self) -> dict:
        """The scale rule with no search: the first trial of a new study (its factors brought into
        ranges that exclude them: Optuna would warn and run a value its distribution cannot hold)."""
        method = self.base_values.get("method", "adaptive")
        return {"method": method if method in self.settings.methods else self.settings.methods[0],
                "layer": self.base_layer, "steps": self.max_steps, "noise_ratio": 0.0,
                **{name: tune_ranges.clamp(value, getattr(self.settings, tune_ranges.RANGES[name][0]))
                   for name, value in _RULE_FACTORS.items()},
                **({"keyword_robust": False} if self.settings.keyword_weight > 0 else {})}

    def rule_note(self) -> dict:
        """The first trial's user attributes: a note when a range moved the rule's factors into it."""
        params = self.rule_params()
        moved = [f"{name} {value:g} -> {params[name]:g} ({tune_ranges.RANGES[name][1]})"
                 for name, value in _RULE_FACTORS.items() if params[name] != value]
        return {"note": "the scale rule, brought into the ranges: " + ", ".join(moved)} if moved else {}

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {field: tuple(getattr(self.settings, field)) for field, _ in tune_ranges.RANGES.values()}

    def steps_cap(self) -> int | None:
        """One pass over the forget corpus (the engine runs no more steps); None when it cannot be read."""
        try:
            return corpus_steps(make_config(self.base_values))
        except (ConfigError, UnlearnError, OSError, ValueError):
            return None

    def objective(self, trial) -> float:
        import optuna

        params = self.suggest(trial)
        values = self.trial_values(params)
        trial.set_user_attr("settings", _settings_of(values))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        started = time.perf_counter()
        middle = max(0, values["steps"] // 2 - 1)

        def report_half_way(record: dict) -> None:
            if not self.settings.prune or record["step"] != middle or values["steps"] < 4:
                return
            scores = self.scorer(with_perplexity=False)
            trial.set_user_attr("half_way", scores)
            # One common step (percent of the run), so trials of any length compare in Optuna's records.
            trial.report(self.objective_of(scores), HALF_WAY)
            if hopeless(scores, self.baseline, self.settings):
                _set_constraints(trial, constraint_values(scores, self.baseline, self.settings))
                raise optuna.TrialPruned(f"pruned at step {middle}: retain accuracy {scores['retain_accuracy']:.3f}")

        try:
            config = make_config(values)
            result = unlearn(config, model=self.model, tokenizer=self.tokenizer, callbacks=(report_half_way,),
                             progress=False)
            scores = self.scorer()
            trial.set_user_attr("health", result.health["verdict"] if result.health else None)
        except (ConfigError, UnlearnError) as error:
            trial.set_user_attr("error", str(error))
            _set_constraints(trial, [1.0])  # a failed run counts as infeasible
            raise optuna.TrialPruned(f"failed: {error}") from None
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
            self.restore()
        trial.set_user_attr("scores", scores)
        _set_constraints(trial, constraint_values(scores, self.baseline, self.settings))
        return self.objective_of(scores)

    def objective_of(self, scores: dict) -> float:
        return objective_value(scores, self.baseline, self.scorer.chance, self.settings.keyword_weight,
                               self.settings.forget_measure)


def _settings_of(values: dict) -> dict:
    keys = ("method", "layer", "steps", "lr", "alpha", "steering_coeff", "beta", "noise", "keyword_robust")
    return {k: values[k] for k in keys if k in values and not (k == "steering_coeff" and values["method"] != "rmu")
            and not (k == "beta" and values["method"] != "adaptive")}


def _fingerprint(base: dict, settings: TuneSettings, tasks: dict) -> dict:
    """What a study's trials depend on. Input files count by content (``rmu.fingerprint``), not by
    spelling, so a study continues from another working folder or after its inputs were moved."""
    options = {k: v for k, v in base.items() if k not in _INPUT_OPTIONS}
    # the ranges follow the rule's lr, which --auto-lr decides (given or not): a study continued under
    # another mode would draw its new trials from other lrs
    options.setdefault("auto_lr", UnlearnConfig.model_fields["auto_lr"].default)
    if not base.get("keyword_robust") and settings.keyword_weight == 0:  # no trial inserts keyword sentences
        for key in fingerprint.KEYWORD_ONLY:
            options.pop(key, None)
    return json.loads(json.dumps({"base": options, "inputs": _input_identities(base),
                                  "settings": _study_settings(settings), "tasks": tasks}, default=str))


def _study_settings(settings: TuneSettings) -> dict:
    """The tune settings a study's trials depend on (not how many, how long, or where stored)."""
    keep = {k: v for k, v in asdict(settings).items()
            if k not in ("trials", "timeout", "seeds", "select_top", "storage", "prune")}
    if settings.keyword_templates is None:  # studies begun before --keyword-template existed continue
        keep.pop("keyword_templates")
    for field, _ in tune_ranges.RANGES.values():  # ... and those begun before the ranges could be set
        if tuple(getattr(settings, field)) == getattr(TuneSettings, field):
            keep.pop(field)
    if settings.forget_measure == "accuracy":  # ... and before --forget-measure (they scored accuracy)
        keep.pop("forget_measure")
    return keep


_INPUT_OPTIONS = fingerprint.PATH_OPTIONS | {"keywords"}


def _input_identities(base: dict) -> dict:
    roles = fingerprint.input_roles(base["model"], base.get("forget") or {}, base.get("retain"),
                                    base.get("control_vectors"), number_every_retain=True)
    if base.get("keywords"):
        roles["keywords"] = base["keywords"]
    return {role: (fingerprint.model_identity if role == "model" else fingerprint.source_identity)(source)
            for role, source in roles.items()}


def _legacy_fingerprint(base: dict, settings: TuneSettings, tasks: dict) -> dict:
    """The fingerprint of studies started before inputs counted by content (paths as spelled)."""
    return json.loads(json.dumps({"base": base, "settings": _study_settings(settings), "tasks": tasks}, default=str))


def _study_differences(saved: dict, current: dict) -> list[str]:
    """Which settings or inputs differ between a saved study's fingerprint and this command's."""
    changed = [k for k in set(saved["base"]) | set(current["base"]) if saved["base"].get(k) != current["base"].get(k)]
    old_inputs, new_inputs = saved.get("inputs", {}), current.get("inputs", {})
    changed += [f"{k} (its contents)" for k in set(old_inputs) | set(new_inputs) if old_inputs.get(k) != new_inputs.get(k)]
    old_settings, new_settings = saved.get("settings", {}), current.get("settings", {})
    changed += [f"{k} (was {old_settings.get(k, 'the default')}, now {new_settings.get(k, 'the default')})"
                for k in set(old_settings) | set(new_settings) if old_settings.get(k) != new_settings.get(k)]
    return sorted(changed)


def _tune_inputs(arguments: dict) -> list:
    """The input paths of a study (those of a sweep, and the general text), for rmu.outputs."""
    return sweep_inputs(arguments) + [arguments.get("general_text")]


@writes_folder("tune", inputs=_tune_inputs)
def tune(base: dict | UnlearnConfig, output: str | Path, *, forget_tasks: Sequence, retain_tasks: Sequence,
         general_text: Sequence[str] | str | Path | None = None, settings: TuneSettings | None = None,
         model=None, tokenizer=None, progress: bool = True) -> dict:
    """Run (or continue) a study; returns the summary (also in ``DIR/summary.json``)."""
    import optuna

    settings = settings or TuneSettings()
    started = time.perf_counter()
    values = base.model_dump() if isinstance(base, UnlearnConfig) else dict(base)
    for key in _TRIAL_OPTIONS:
        values.pop(key, None)
    if not values.get("model"):
        raise TuneError("the base configuration names no model (--model or 'model:' in --config)")
    bad = [m for m in settings.methods if m not in METHODS]
    if bad or not settings.methods:
        raise TuneError(f"unknown method(s) {bad}; use {', '.join(METHODS)}")
    if settings.trials < 1 or settings.seeds < 1:
        raise TuneError("--trials and --seeds must be at least 1")
    check_select_top(settings)
    check_keyword_templates(settings)
    check_ranges(settings)
    check_forget_measure(settings)
    make_config(values)  # a bad base configuration fails here, before the model is loaded
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    forget, retain = _tasks(forget_tasks, "forget"), _tasks(retain_tasks, "retain")
    held_out = None
    if settings.holdout:
        halves = [split_halves(t) for t in forget], [split_halves(t) for t in retain]
        forget, retain = [h[0] for h in halves[0]], [h[0] for h in halves[1]]
        held_out = [h[1] for h in halves[0]], [h[1] for h in halves[1]]
    general = _general_text(general_text)
    if model is None:
        model, tokenizer = load_full_model(values["model"], values.get("dtype", "float32"), values.get("device", "auto"),
                                           values.get("trust_remote_code", False))
    keywords = study_keywords(values, settings) if settings.keyword_weight > 0 else None
    scorer = _Scorer(model, tokenizer, forget, retain, general, settings, keywords)
    tuner = _Tuner(values, output, scorer, settings, progress)

    storage = settings.storage or f"sqlite:///{(output / STUDY_FILE).resolve()}"
    with _creation_lock(storage):  # processes starting together must not both create the schema
        study = optuna.create_study(
            study_name=settings.study_name, storage=storage, load_if_exists=True, direction="minimize",
            sampler=_sampler(values.get("seed", 42), joining=False, finished=0),
            pruner=optuna.pruners.NopPruner(),  # trials stop by rmu's own rule, hopeless(), half way
        )
        current = _fingerprint(values, settings, {"forget": [t.name for t in forget],
                                                      "retain": [t.name for t in retain]})
        saved = study.user_attrs.get("fingerprint")
        if saved is None:
            study.set_user_attr("fingerprint", current)
            # a new study starts from the scale rule
            study.enqueue_trial(tuner.rule_params(), user_attrs=tuner.rule_note())
            if settings.keyword_weight > 0:  # ... and the rule with --keyword-robust
                study.enqueue_trial({**tuner.rule_params(), "keyword_robust": True})
        else:
            if "inputs" not in saved:  # a study begun before inputs counted by content: paths as spelled
                current = _legacy_fingerprint(values, settings, current["tasks"])
            # options added to rmu since the study began count only when they are not at their defaults
            current = {**current, "base": fingerprint.without_new_defaults(saved["base"], current["base"])}
            if current != saved:
                changed = _study_differences(saved, current)
                raise TuneError(f"the study '{settings.study_name}' in {storage} was started with other settings "
                                f"(differs in: {', '.join(changed) or 'settings or questions'}); use another "
                                "--output, --storage or --study-name")
        study.sampler = _sampler(values.get("seed", 42), joining=saved is not None, finished=len(study.trials))
    tuner.baseline = study.user_attrs.get("baseline") or scorer()
    study.set_user_attr("baseline", tuner.baseline)

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(states=finished))
    bar = tqdm(total=settings.trials, initial=min(done, settings.trials), desc="tune", unit="trial",
               disable=not progress)

    def show(study_, trial) -> None:
        bar.update(1)
        best = _best_trial(study_)
        if best is not None:
            scores = best.user_attrs["scores"]
            bar.set_postfix(best=f"#{best.number}", forget=f"{scores['forget_accuracy']:.3f}",
                            retain=f"{scores['retain_accuracy']:.3f}")

    if done < settings.trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Each trial's health verdict goes to trials.json; its warnings would bury the progress bar.
        health_logger = logging.getLogger("rmu.health")
        level = health_logger.level
        health_logger.setLevel(logging.ERROR)
        try:
            study.optimize(tuner.objective, n_trials=settings.trials - done, timeout=settings.timeout,
                           callbacks=[optuna.study.MaxTrialsCallback(settings.trials, states=finished), show])
        finally:
            health_logger.setLevel(level)
    bar.close()
    return _write_outputs(study, tuner, held_out, settings, started)


def _sampler(seed: int, joining: bool, finished: int):
    """TPE, which reads the constraint values each trial sets (Trial.set_constraint; feasible when <= 0).

    The process that starts a study draws from ``seed``, so a study run in one go is reproducible. A
    process that continues or joins one draws from its own stream (the seed, the trials so far, its
    host and pid): with the study's seed it would repeat the draws the first process made.
    """
    import optuna

    if joining:
        key = f"{seed}:{finished}:{socket.gethostname()}:{os.getpid()}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def _creation_lock(storage: str):
    """A file lock beside a SQLite database (Optuna's schema creation races); nothing for servers."""
    import contextlib

    from filelock import FileLock

    if not storage.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return FileLock(storage.removeprefix("sqlite:///") + ".lock", timeout=600)


def _tasks(items: Sequence, what: str) -> list[Task]:
    if not items:
        raise TuneError(f"give at least one {what} question file (--{what}-questions)")
    loaded = []
    for item in items:
        try:
            loaded.append(load_task(item))
        except (FileNotFoundError, ValueError) as error:
            raise TuneError(f"{what} questions {item!s}: {error}") from None
    return loaded


def _general_text(source) -> list[str] | None:
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise TuneError(f"--general-text {path} does not exist")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = [t for t in source if t.strip()]
    if not texts:
        raise TuneError("--general-text holds no text")
    return texts


def _best_trial(study):
    """The complete, feasible trial with the lowest objective (None when there is none yet)."""
    import optuna

    feasible = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                if "scores" in t.user_attrs and all(c <= 0 for c in t.user_attrs.get("constraints", [1.0]))]
    return min(feasible, key=lambda t: (t.value, t.number), default=None)


def _least_violating(study):
    import optuna

    complete = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if "scores" in t.user_attrs]
    return min(complete, key=lambda t: (sum(max(c, 0) for c in t.user_attrs["constraints"]), t.value), default=None)


def _trial_record(trial) -> dict:
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            **{k: trial.user_attrs.get(k) for k in ("settings", "scores", "constraints", "half_way", "health",
                                                   "seconds", "worker", "error", "note")}}


def _write_outputs(study, tuner: _Tuner, held_out, settings: TuneSettings, started: float) -> dict:
    trials = [_trial_record(t) for t in study.trials]
    write_json(tuner.output / TRIALS_FILE, {"study": study.study_name, "baseline": tuner.baseline,
                                            "chance": tuner.scorer.chance, "trials": trials})
    best = _best_trial(study)
    feasible = best is not None
    best = best or _least_violating(study)
    summary: dict[str, Any] = {
        "kind": "tune", "settings": json.loads(json.dumps({**asdict(settings), "base": tuner.base_values}, default=str)),
        "baseline": tuner.baseline, "chance": tuner.scorer.chance, "feasible": feasible,
        "trials": {state: sum(t["state"] == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        "max_retain_drop": settings.max_retain_drop, "max_perplexity_rise": settings.max_perplexity_rise,
        "holdout": settings.holdout,
    }
    if best is not None:
        selection = None
        if settings.select_top > 1:  # the best of several on several seeds, with its reruns
            best, summary["seeds"], selection = _select_across_seeds(study, tuner, held_out, settings)
            summary["selection"] = selection
        values = tuner.trial_values(best.params)
        _write_best_yaml(tuner.output / BEST_FILE, make_config(values), best, feasible, selection)
        summary["best"] = _trial_record(best)
        if selection is None:
            summary["seeds"] = _rerun_seeds(tuner, values, held_out, settings.seeds)
        # a best at an edge of its range may have a better neighbour outside it (issue #11)
        summary["range_edges"] = tune_ranges.range_edges(best.params, tuner.ranges(), tuner.max_steps,
                                                         tuner.steps_cap())
    from rmu import plots

    plots.save_figure(plot_pareto(trials, tuner.baseline, tuner.scorer.chance, settings.max_retain_drop,
                                  best.number if best is not None else None), tuner.output / PARETO_FILE)
    # the scale rule's measurements the ranges were drawn from, per layer calibrated in this process
    summary["calibrations"] = {str(layer): calibration for layer, calibration in sorted(tuner.calibrations.items())}
    summary["minutes"] = round((time.perf_counter() - started) / 60, 2)
    write_json(tuner.output / SUMMARY_FILE, summary)
    return summary


def _write_best_yaml(path: Path, config: UnlearnConfig, trial, feasible: bool, selection: dict | None = None) -> None:
    values = {k: v for k, v in config.model_dump().items() if k not in ("output", "overwrite", "resume", "auto")}
    note = "" if feasible else " NO TRIAL MET THE CONSTRAINT: these are the least violating settings.\n#"
    chosen = "" if selection is None else (
        f"# Chosen among the {len(selection['candidates'])} best trials rerun on {len(selection['seeds'])} seeds "
        f"({', '.join(map(str, selection['seeds']))}), tuning half: {selection['rule']}; mean objective "
        f"{_candidate(selection, trial.number)['objective']['mean']:.4f} (summary.json, selection).\n")
    header = (f"# rmu tune: trial {trial.number}, objective {trial.value:.4f}.{note}\n{chosen}"
              "# Run it with: rmu unlearn --config best.yaml --output OUT\n")
    path.write_text(header + yaml.safe_dump(values, sort_keys=False))


def _rerun_seeds(tuner: _Tuner, values: dict, held_out, seeds: int) -> dict:
    """The best settings on ``seeds`` seeds (seed, seed+1, ...): scores, and their mean and std."""
    first = int(values.get("seed", 42))
    holdout_scorer = _holdout_scorer(tuner, held_out)
    runs = []
    for seed in range(first, first + seeds):
        try:
            unlearn(make_config(dict(values, seed=seed)), model=tuner.model, tokenizer=tuner.tokenizer, progress=False)
            run = {"seed": seed, **tuner.scorer()}
            if holdout_scorer is not None:
                run["holdout"] = holdout_scorer(with_perplexity=False)
        finally:
            tuner.restore()
        runs.append(run)
    out: dict[str, Any] = {"runs": runs, **_mean_std(runs)}
    if holdout_scorer is not None:
        out["holdout_baseline"] = tuner.baseline_holdout
        out["holdout"] = _mean_std([r["holdout"] for r in runs])
    return out


def _holdout_scorer(tuner: _Tuner, held_out) -> _Scorer | None:
    """The scorer of the held-out half (None without ``holdout``); scores the model as it is now, the
    original one, into ``tuner.baseline_holdout``."""
    if held_out is None:
        return None
    scorer = _Scorer(tuner.model, tuner.tokenizer, held_out[0], held_out[1], None, tuner.settings,
                     tuner.scorer.keywords)
    tuner.baseline_holdout = scorer(with_perplexity=False)
    return scorer


def _mean_std(runs: list[dict]) -> dict:
    keys = [k for k in _SCORES if all(k in r for r in runs)]
    return {k: _spread([r[k] for r in runs]) for k in keys}


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


# ---- choosing settings that hold across seeds (--select-top, issue #11) ------------------------------
#
# The single-seed best is often a lucky draw (docs/tuning.md, "Choosing settings that hold across
# seeds"). With select_top N > 1 the N best trials each run
# on the ``seeds`` seeds, are scored on the questions the study optimised (the tuning half with
# ``holdout``), and the one whose scores hold across the seeds is kept. The held-out half is scored
# for the record only: it is attached to the candidates after the choice.

# How the choice was made, the first rule that has a candidate (summary.json, selection.rule).
RULE_EVERY_SEED = "feasible on every seed: the lowest mean objective"
RULE_ON_MEAN = "none feasible on every seed; feasible on the mean of the seeds: the lowest mean objective"
RULE_LEAST_VIOLATING = "none feasible on the mean of the seeds: the least violating mean"
HOLDOUT_NOT_USED = "holdout_not_used_for_choice"  # a candidate's held-out scores, reported only


def check_select_top(settings: TuneSettings) -> None:
    if settings.select_top < 1:
        raise TuneError("--select-top must be at least 1 (1: keep the best trial of the study's own seed)")
    if settings.select_top > 1 and settings.seeds < 2:
        raise TuneError(f"--select-top {settings.select_top} compares trials across seeds: add --seeds K with "
                        "K >= 2 (each candidate then runs K times), or drop --select-top")


def _feasible(constraints: Sequence[float]) -> bool:
    return all(c <= 0 for c in constraints)


def _violation(constraints: Sequence[float]) -> float:
    return sum(max(c, 0.0) for c in constraints)


def _top_trials(study, count: int) -> list:
    """The ``count`` best complete trials: the feasible ones by objective (fewer when fewer are
    feasible); when none is, the least violating, as the single best is chosen."""
    import optuna

    complete = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if "scores" in t.user_attrs]
    feasible = sorted((t for t in complete if _feasible(t.user_attrs["constraints"])), key=lambda t: (t.value, t.number))
    if feasible:
        return feasible[:count]
    return sorted(complete, key=lambda t: (_violation(t.user_attrs["constraints"]), t.value, t.number))[:count]


def _rerun_attr(trial: int, seed: int) -> str:
    return f"rerun {trial} seed {seed}"


def _rerun_key(values: dict, tuner: _Tuner) -> str:
    """What a rerun's scores depend on besides its trial and seed: the run's options (the input files
    are not named: the study's fingerprint, which a continued study matches, has their contents) and
    how the run is scored."""
    settings, general = tuner.settings, tuner.scorer.general_text
    key = {"run": {k: v for k, v in values.items() if k not in _INPUT_OPTIONS | {"seed"}},
           "scoring": {k: getattr(settings, k) for k in ("scoring", "limit", "eval_batch_size", "holdout",
                                                          "keyword_weight", "keyword_templates")},
           "keywords": tuner.scorer.keywords,
           "general_text": hashlib.sha256("\n".join(general).encode()).hexdigest() if general else None}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _seed_scores(study, tuner: _Tuner, candidates: list, seeds: list[int], held_out) -> dict:
    """Each candidate's scores on each seed, by (trial number, seed), with where they came from:

    * ``study``: run by an earlier ``rmu tune`` of this study with the same options (study user attrs);
    * ``trial``: without ``holdout``, the first seed is the trial's own run (runs are deterministic);
      with it, the first seed runs again, as the held-out half needs the model unlearned;
    * ``run``: run now (one ``rmu.engine.unlearn`` each), then stored in the study.
    """
    holdout_scorer = _holdout_scorer(tuner, held_out)
    found, planned = {}, []
    for trial in candidates:
        values = tuner.trial_values(trial.params)
        key = _rerun_key(values, tuner)
        for seed in seeds:
            stored = study.user_attrs.get(_rerun_attr(trial.number, seed))
            if stored and stored.get("key") == key:
                found[trial.number, seed] = dict(stored, source="study")
            elif seed == seeds[0] and held_out is None:
                found[trial.number, seed] = {"scores": trial.user_attrs["scores"], "source": "trial"}
            else:
                planned.append((trial.number, seed, values, key))
    bar = tqdm(total=len(planned), desc="seeds", unit="run", disable=not tuner.progress or not planned)
    # each run's health verdict would bury the bar (the trials' verdicts are in trials.json)
    health_logger = logging.getLogger("rmu.health")
    level = health_logger.level
    health_logger.setLevel(logging.ERROR)
    try:
        for number, seed, values, key in planned:
            bar.set_postfix(trial=number, seed=seed)
            found[number, seed] = dict(_rerun(tuner, values, seed, key, holdout_scorer), source="run")
            study.set_user_attr(_rerun_attr(number, seed), {k: v for k, v in found[number, seed].items()
                                                            if k != "source"})
            bar.update(1)
    finally:
        health_logger.setLevel(level)
        bar.close()
    return found


def _rerun(tuner: _Tuner, values: dict, seed: int, key: str, holdout_scorer: _Scorer | None) -> dict:
    """One candidate on one seed: unlearned in memory, scored, the weights put back."""
    try:
        unlearn(make_config(dict(values, seed=seed)), model=tuner.model, tokenizer=tuner.tokenizer, progress=False)
        record = {"key": key, "scores": tuner.scorer()}
        if holdout_scorer is not None:
            record["holdout"] = holdout_scorer(with_perplexity=False)
    finally:
        tuner.restore()
    return record


def _candidate(selection: dict, number: int) -> dict:
    return next(c for c in selection["candidates"] if c["trial"] == number)


def _candidate_record(trial, seeds: list[int], found: dict, tuner: _Tuner) -> dict:
    """A candidate's tuning-half scores per seed, their objective and constraints, and the means."""
    settings, base = tuner.settings, tuner.baseline
    runs = []
    for seed in seeds:
        scores = found[trial.number, seed]["scores"]
        constraints = constraint_values(scores, base, settings)
        runs.append({"seed": seed, **scores, "objective": tuner.objective_of(scores),
                     "constraints": constraints, "feasible": _feasible(constraints),
                     "source": found[trial.number, seed]["source"]})
    means = {k: block["mean"] for k, block in _mean_std(runs).items()}
    mean_constraints = constraint_values(means, base, settings)
    return {"trial": trial.number, "settings": trial.user_attrs.get("settings"), "study_objective": trial.value,
            "runs": runs, **_mean_std(runs), "objective": _spread([r["objective"] for r in runs]),
            "feasible_every_seed": all(r["feasible"] for r in runs), "constraints_on_mean": mean_constraints,
            "feasible_on_mean": _feasible(mean_constraints)}


def _choose(candidates: list[dict]) -> tuple[dict, str]:
    """The candidate that holds across seeds, and the rule that chose it. It is given the tuning-half
    records only (the held-out scores are attached after the choice)."""
    def mean_objective(c):
        return c["objective"]["mean"], c["trial"]

    every = [c for c in candidates if c["feasible_every_seed"]]
    if every:
        return min(every, key=mean_objective), RULE_EVERY_SEED
    on_mean = [c for c in candidates if c["feasible_on_mean"]]
    if on_mean:
        return min(on_mean, key=mean_objective), RULE_ON_MEAN
    return min(candidates, key=lambda c: (_violation(c["constraints_on_mean"]), *mean_objective(c))), \
        RULE_LEAST_VIOLATING


def _select_across_seeds(study, tuner: _Tuner, held_out, settings: TuneSettings) -> tuple[Any, dict, dict]:
    """The trial chosen among the ``select_top`` best on ``seeds`` seeds; its reruns in the format of
    :func:`_rerun_seeds` (summary.json "seeds"); and the selection record (summary.json "selection")."""
    candidates = _top_trials(study, settings.select_top)
    first = int(tuner.trial_values(candidates[0].params).get("seed", 42))
    seeds = list(range(first, first + settings.seeds))  # as _rerun_seeds
    found = _seed_scores(study, tuner, candidates, seeds, held_out)
    records = [_candidate_record(t, seeds, found, tuner) for t in candidates]
    chosen, rule = _choose(records)
    if held_out is not None:
        for record in records:
            holdout = [{"seed": seed, **found[record["trial"], seed]["holdout"]} for seed in seeds]
            record[HOLDOUT_NOT_USED] = {"runs": holdout, **_mean_std(holdout)}
    best = next(t for t in candidates if t.number == chosen["trial"])
    runs = [{"seed": seed, **found[best.number, seed]["scores"],
             **({"holdout": found[best.number, seed]["holdout"]} if held_out is not None else {})} for seed in seeds]
    reruns: dict[str, Any] = {"runs": runs, **_mean_std(runs)}
    if held_out is not None:
        reruns["holdout_baseline"] = tuner.baseline_holdout
        reruns["holdout"] = _mean_std([r["holdout"] for r in runs])
    sources = [r["source"] for c in records for r in c["runs"]]
    selection = {"top": settings.select_top, "seeds": seeds, "rule": rule, "chosen": best.number,
                 "single_seed_best": candidates[0].number,
                 "scored_on": "the tuning half" if held_out is not None else "the tuning questions",
                 "runs": {source: sources.count(source) for source in ("run", "study", "trial")},
                 "candidates": records}
    return best, reruns, selection


def plot_pareto(trials: list[dict], baseline: dict, chance: float, max_retain_drop: float, best: int | None):
    """Forget against retain accuracy of every scored trial; the constraint and the best trial marked."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 4.5))
    scored = [t for t in trials if t.get("scores")]
    floor = baseline["retain_accuracy"] - max_retain_drop
    for feasible, colour, label in ((True, "C0", "feasible"), (False, "C3", "violates the constraint")):
        group = [t for t in scored if all(c <= 0 for c in t["constraints"]) == feasible]
        ax.scatter([t["scores"]["forget_accuracy"] for t in group], [t["scores"]["retain_accuracy"] for t in group],
                   c=colour, label=label, alpha=0.8)
    ax.axhline(floor, color="grey", linestyle="--", label=f"retain floor (base - {max_retain_drop:g})")
    ax.axvline(chance, color="grey", linestyle=":", label="chance")
    ax.scatter([baseline["forget_accuracy"]], [baseline["retain_accuracy"]], marker="s", c="k", label="base model")
    chosen = [t for t in scored if t["number"] == best]
    if chosen:
        ax.scatter([chosen[0]["scores"]["forget_accuracy"]], [chosen[0]["scores"]["retain_accuracy"]], marker="*",
                   s=250, c="gold", edgecolors="k", label=f"best (trial {best})", zorder=5)
    ax.set_xlabel("forget accuracy (lower is better, down to chance)")
    ax.set_ylabel("retain accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"rmu tune: {len(scored)} scored trials")
    return figure


# ---- how a study is shown ------------------------------------------------------------------------

class TuneStudy(Experiment):
    """How ``rmu report`` and ``rmu tune`` show a study: its summary.json, trials.json and pareto.png.

    Not run through :meth:`Experiment.run` (:func:`tune` writes the folder); registered so that a
    study folder renders like any result. Old studies' summary.json, written before it carried a
    ``"kind"``, are recognised by the file name.
    """

    kind = "tune"
    title = "Tuning study"
    command = "tune"
    settings = Settings  # the study's settings are its TuneSettings and base options, saved under "settings"

    @classmethod
    def result_file(cls) -> str:
        return SUMMARY_FILE

    def section(self, folder, data):
        trials = folder / TRIALS_FILE
        records = read_json(trials).get("trials", []) if trials.is_file() else []
        return super().section(folder, dict(data, trial_records=records))

    def tables(self, data: dict) -> list[Table]:
        tables = []
        records = data.get("trial_records") or []
        if records:
            rows = [[t["number"], t["state"], *_settings_cells(t.get("settings") or {}),
                     *_score_cells(t.get("scores") or {}), t.get("value"),
                     None if not t.get("constraints") else "yes" if all(c <= 0 for c in t["constraints"]) else "no",
                     t.get("health")] for t in records]
            tables.append(Table(["trial", "state", *_SETTING_COLUMNS, "retain acc, keyword",
                                 "forget acc", "forget answer p", "retain acc", "perplexity", "objective", "feasible",
                                 "health"], rows, "Trials"))
        best = data.get("best")
        if best is not None:
            label = "best" if data.get("feasible") else "least violating (no trial met the constraint)"
            if data.get("selection"):
                label = f"chosen on {len(data['selection']['seeds'])} seeds (--select-top)"
            rows = [[label, best["number"], *_settings_cells(best.get("settings") or {}),
                     *_score_cells(best.get("scores") or {})]]
            seeds = data.get("seeds") or {}
            for name, block in (("rerun", seeds), ("held-out questions", seeds.get("holdout") or {})):
                if "forget_accuracy" in block:
                    rows.append([f"{name}, {len(seeds['runs'])} seed(s)", best["number"], *[None] * len(_SETTING_COLUMNS),
                                 *[f"{block[k]['mean']:.3f} +- {block[k]['std']:.3f}" if k in block else None
                                   for k in _SCORES]])
            tables.append(Table(["", "trial", *_SETTING_COLUMNS, "retain acc, keyword", "forget acc",
                                 "forget answer p", "retain acc", "perplexity"], rows,
                                "Best settings"))
        if data.get("selection"):
            tables.append(_selection_table(data["selection"]))
        return tables

    def notes(self, data: dict) -> list[str]:
        base = data.get("baseline") or {}
        return ["base model: " + ", ".join(f"{k} {v:.4g}" for k, v in base.items()),
                f"chance (forget questions): {data.get('chance'):.3f}",
                "trials: " + ", ".join(f"{n} {state.lower()}" for state, n in (data.get("trials") or {}).items() if n),
                f"minutes: {data.get('minutes')}", *tune_ranges.edge_lines(data.get("range_edges") or [])]

    def summary(self, data: dict) -> list[str]:
        base = data["baseline"]
        lines = [f"base: forget {base['forget_accuracy']:.3f}, retain {base['retain_accuracy']:.3f} "
                 f"(chance {data['chance']:.3f}); trials: " +
                 ", ".join(f"{n} {state.lower()}" for state, n in data["trials"].items() if n)]
        best = data.get("best")
        if best is None:
            return lines + ["no trial finished"]
        scores = best["scores"]
        verdict = "best" if data["feasible"] else "no trial met the constraint; least violating"
        answer_p = f" (answer p {scores['forget_probability']:.3f})" if "forget_probability" in scores else ""
        lines.append(f"{verdict}: trial {best['number']} {best['settings']}: forget {scores['forget_accuracy']:.3f}"
                     f"{answer_p}, retain {scores['retain_accuracy']:.3f}")
        seeds = data.get("seeds") or {}
        for label, block in (("rerun", seeds), ("held-out questions", seeds.get("holdout") or {})):
            if "forget_accuracy" in block:
                runs = len(seeds["runs"])
                lines.append(f"{label} on {runs} seed(s): forget {block['forget_accuracy']['mean']:.3f} "
                             f"+- {block['forget_accuracy']['std']:.3f}, retain {block['retain_accuracy']['mean']:.3f} "
                             f"+- {block['retain_accuracy']['std']:.3f}")
        if data.get("selection"):
            lines += _selection_lines(data["selection"])
        return lines + tune_ranges.edge_lines(data.get("range_edges") or [])


_SETTING_COLUMNS = ["method", "layer", "steps", "lr", "alpha", "c or beta", "noise", "keyword-robust"]
# The keyword score first: the tables end with forget, retain accuracy and perplexity, as before it existed.
_SCORES = ("retain_keyword_accuracy", "forget_accuracy", "forget_probability", "retain_accuracy", "perplexity")


def _settings_cells(settings: dict) -> list:
    def text(value):
        return ", ".join(f"{v:.4g}" for v in value) if isinstance(value, list) else value

    coefficient = settings.get("steering_coeff", settings.get("beta"))
    return [settings.get("method"), settings.get("layer"), settings.get("steps"), text(settings.get("lr")),
            text(settings.get("alpha")), text(coefficient), text(settings.get("noise")),
            "yes" if settings.get("keyword_robust") else None]


def _score_cells(scores: dict) -> list:
    return [scores.get(k) for k in _SCORES]


def _per_seed(runs: list[dict], key: str, digits: int = 2) -> str:
    return " / ".join(f"{r[key]:.{digits}f}" for r in runs)


def _selection_table(selection: dict) -> Table:
    """--select-top: each candidate's tuning-half scores per seed; held-out ones marked as not used."""
    rows = []
    for c in selection["candidates"]:
        holdout = c.get(HOLDOUT_NOT_USED)
        rows.append([c["trial"], "chosen" if c["trial"] == selection["chosen"] else None,
                     f"{c['objective']['mean']:.4f} +- {c['objective']['std']:.4f}",
                     _per_seed(c["runs"], "forget_accuracy"), _per_seed(c["runs"], "retain_accuracy", 3),
                     "yes" if c["feasible_every_seed"] else "no", "yes" if c["feasible_on_mean"] else "no",
                     holdout and _per_seed(holdout["runs"], "forget_accuracy"),
                     holdout and _per_seed(holdout["runs"], "retain_accuracy", 3)])
    seeds = ", ".join(map(str, selection["seeds"]))
    return Table(["trial", "", "objective mean +- std", "forget", "retain", "every seed", "on the mean",
                  "held-out forget (not used)", "held-out retain (not used)"], rows,
                 f"Candidates on seeds {seeds} (--select-top {selection['top']}): accuracies per seed and feasible "
                 f"on every seed / on the mean, chosen by {selection['scored_on']}: {selection['rule']}")


def _selection_lines(selection: dict) -> list[str]:
    table = _selection_table(selection)
    lines = [f"chosen: trial {selection['chosen']} among {len(selection['candidates'])} trials on seeds "
             f"{', '.join(map(str, selection['seeds']))} ({selection['rule']}; the single-seed best was trial "
             f"{selection['single_seed_best']}); per seed, scored on {selection['scored_on']}:"]
    columns = [i for i, name in enumerate(table.header) if any(row[i] is not None for row in table.rows)]
    cells = [[table.header[i] for i in columns]] + [["" if row[i] is None else str(row[i]) for i in columns]
                                                   for row in table.rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(columns))]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    runs = selection["runs"]
    return lines + [f"  runs: {runs['run']} now, {runs['study']} reused from the study, {runs['trial']} the trials' own"]
