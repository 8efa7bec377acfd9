"""Linear probes: is the forgotten answer still linearly readable from the activations?

For each forget question, the prompt (the evaluator's letter prompt by default, which lists the
choices) is run once and the output of every decoder layer at the prompt's last token is kept.
Per layer, a logistic regression (scikit-learn, features standardised) predicts the index of the
correct choice; its accuracy is the mean over ``splits`` random stratified train/test splits
(``test_fraction`` held out). Chance is about 1/number of choices (the majority class is reported).

``prompt="completion"`` probes statements instead, for questions that are the start of a sentence
("The chemical symbol of iron is"): each choice completes it ("... is Fe", "... is Cu", ...), the
activation at the statement's last token is kept, and a logistic regression learns "true
statement or not" on the training questions. On a held-out question the probe picks the choice
whose statement it scores highest; accuracy is the fraction picked right (chance 1/choices). This
asks the question that matters for unlearning, whether a layer still tells the true fact from
false ones, even when answers are too many for a per-answer classifier.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from rmu.analysis.common import decoder_outputs
from rmu.attacks.common import Attack, AttackError, AttackSettings, Scoring, split_questions, with_facts
from rmu.eval.prompts import cloze_prompt, letter_prompt
from rmu.eval.tasks import Task
from rmu.experiments.base import Table, open_models, split_models
from rmu.progress import bar as tqdm
from rmu.runner import eval_mode

PROMPTS = {"letter": letter_prompt, "cloze": cloze_prompt, "completion": None}  # completion: statements


@torch.no_grad()
def layer_activations(model, tokenizer, prompts: list[str], progress: bool = False, desc: str = "activations"):
    """(layers, prompts, hidden) float32: each decoder layer's output at each prompt's last token."""
    device = model.get_input_embeddings().weight.device
    rows = []
    with eval_mode(model):
        for prompt in tqdm(prompts, desc=desc, disable=not progress, unit="prompt", dynamic_ncols=True):
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
            if ids.shape[1] == 0:
                raise AttackError(f"prompt {prompt[:40]!r} encodes to no tokens")
            rows.append(torch.stack([h[0, -1].float().cpu() for h in decoder_outputs(model, ids)]))
    return torch.stack(rows, dim=1)


def _sklearn():
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise AttackError("the probe needs scikit-learn: pip install scikit-learn") from None
    return lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def probe_accuracy(features, labels, *, test_fraction: float = 0.3, splits: int = 5, seed: int = 0,
                   c: float = 1.0) -> float:
    """Mean held-out accuracy of a logistic regression over ``splits`` stratified random splits."""
    make_probe = _sklearn()
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if len(set(y.tolist())) < 2:
        raise AttackError("the probe needs at least two different answers")
    if not 0 < test_fraction < 1:
        raise AttackError("test_fraction must lie strictly between 0 and 1")
    classes, test_count = len(set(y.tolist())), int(np.ceil(test_fraction * len(y)))
    stratify = min(Counter(y.tolist()).values()) >= 2 and classes <= test_count <= len(y) - classes
    splitter = (StratifiedShuffleSplit if stratify else ShuffleSplit)(n_splits=splits, test_size=test_fraction,
                                                                      random_state=seed)
    scores = []
    for train, test in splitter.split(x, y):
        probe = make_probe(c)
        probe.fit(x[train], y[train])
        scores.append(float((probe.predict(x[test]) == y[test]).mean()))
    return float(np.mean(scores))


def statement_probe_accuracy(features, answers, choices: int, *, test_fraction: float = 0.3, splits: int = 5,
                             seed: int = 0, c: float = 1.0) -> float:
    """Held-out accuracy of picking the true statement among each question's ``choices`` statements.

    ``features``: (questions x choices, hidden), the statements of question q in rows q*choices ...;
    ``answers``: the correct choice of each question. Splits are over questions, never statements.
    """
    from sklearn.model_selection import ShuffleSplit

    make_probe = _sklearn()
    x = np.asarray(features, dtype=np.float64).reshape(len(answers), choices, -1)
    answers = np.asarray(answers)
    truth = np.zeros((len(answers), choices), dtype=int)
    truth[np.arange(len(answers)), answers] = 1
    scores = []
    for train, test in ShuffleSplit(n_splits=splits, test_size=test_fraction, random_state=seed).split(x):
        probe = make_probe(c)
        probe.fit(x[train].reshape(-1, x.shape[-1]), truth[train].reshape(-1))
        decision = probe.decision_function(x[test].reshape(-1, x.shape[-1])).reshape(len(test), choices)
        scores.append(float((decision.argmax(1) == answers[test]).mean()))
    return float(np.mean(scores))


class ProbeSettings(AttackSettings):
    prompt: Scoring = Field("letter", description="letter or cloze: predict the correct choice's index; completion: "
                                                  "tell true statements from false.")
    # the probe
    test_fraction: float = Field(0.3, gt=0, lt=1, description="Share of the questions held out in each split.")
    splits: int = Field(5, ge=1, description="Random train/test splits.")
    seed: int = Field(0, description="Seed of the splits.")
    c: float = Field(1.0, gt=0, description="Inverse regularisation strength of the logistic regression.")


class Probe(Attack):
    """Linear probe per layer predicting the correct choice of forget questions."""

    kind = "probe"
    title = "Linear probes"
    settings = ProbeSettings

    def compute(self, settings: ProbeSettings, progress: bool = True, models: dict | None = None,
                questions: Task | None = None) -> dict:
        s, task = settings, settings.task(questions)
        if len(task) < 4:
            raise AttackError(f"a probe needs several questions; {task.name} has {len(task)}")
        labels = [q.answer for q in task.questions]
        if s.prompt == "completion":
            choices = len(task.questions[0].choices)
            if any(len(q.choices) != choices for q in task.questions):
                raise AttackError("the statement probe needs the same number of choices for every question")
            prompts = [f"{q.question.strip()} {choice}" for q in task.questions for choice in q.choices]
            majority = 1 / choices  # picking one statement per question: chance, whatever the answer order

            def score(x):
                return statement_probe_accuracy(x, labels, choices, test_fraction=s.test_fraction, splits=s.splits,
                                                seed=s.seed, c=s.c)
        else:
            prompts = [PROMPTS[s.prompt](q) for q in task.questions]
            majority = max(Counter(labels).values()) / len(labels)

            def score(x):
                return probe_accuracy(x, labels, test_fraction=s.test_fraction, splits=s.splits, seed=s.seed, c=s.c)
        target = "the true statement among the choices" if s.prompt == "completion" else "index of the correct choice"
        data = {"settings": with_facts(settings, count=len(task), target=target), "majority_class": majority,
                "models": {}}
        for name, model, tokenizer in open_models(settings.models, models):
            activations = layer_activations(model, tokenizer, prompts, progress, desc=f"activations ({name})")
            per_layer = [score(activations[layer].numpy())
                         for layer in tqdm(range(activations.shape[0]), desc=f"probes ({name})", disable=not progress)]
            data["models"][name] = {"layers": list(range(len(per_layer))), "accuracy": per_layer,
                                    "best_layer": int(np.argmax(per_layer)), "best_accuracy": max(per_layer)}
        return data

    def tables(self, data: dict) -> list[Table]:
        rows = [[name, layer, accuracy] for name, entry in data["models"].items()
                for layer, accuracy in zip(entry["layers"], entry["accuracy"])]
        return [Table(["model", "layer", "held-out probe accuracy"], rows)]

    def notes(self, data: dict) -> list[str]:
        return [f"target: {data['settings']['target']}", *self.summary(data)]

    def summary(self, data: dict) -> list[str]:
        return [f"majority class: {data['majority_class']:.3f}"] + [
            f"{name}: best layer {entry['best_layer']} ({entry['best_accuracy']:.3f}); per layer "
            + " ".join(f"{a:.2f}" for a in entry["accuracy"]) for name, entry in data["models"].items()]


def probe_attack(models: dict, questions, output: str | Path | None = None, *, prompt: str = "letter",
                 test_fraction: float = 0.3, splits: int = 5, seed: int = 0, c: float = 1.0,
                 limit: int | None = None, progress: bool = True, plot: bool = True) -> dict:
    """Probe accuracy per layer for each model (e.g. base and unlearned) on forget questions."""
    described, loaded = split_models(models)
    source, task = split_questions(questions)
    settings = ProbeSettings.parse(models=described, questions=source, prompt=prompt, test_fraction=test_fraction,
                                   splits=splits, seed=seed, c=c, limit=limit)
    return Probe().run(settings, output, plot=plot, progress=progress, inputs={"models": loaded, "questions": task})
