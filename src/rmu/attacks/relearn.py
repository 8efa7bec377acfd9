"""Relearning: fine-tune an unlearned model for a few steps and watch the forget accuracy.

Two runs per model from the same weights: on ``k`` forget-corpus documents, and on ``k``
unrelated documents (a control: any fine-tuning may shake a shallow unlearning loose). AdamW
(weight decay 0) on the chosen parameters (all by default), causal-LM loss on the documents
(right padding, pad positions ignored), batches cycling over the ``k`` documents. Forget accuracy
(the evaluator's) is measured at step 0 and every ``eval_every`` steps. The model's weights are
restored afterwards, so the same model object can be attacked again.
"""

from __future__ import annotations

import contextlib
import fnmatch
from pathlib import Path
from typing import Annotated, Sequence

import torch
from pydantic import BeforeValidator, Field

from rmu.attacks.common import (
    Attack, AttackError, AttackSettings, Scoring, accuracy, as_list, split_input, split_questions, with_facts,
)
from rmu.data import read_corpus
from rmu.experiments.base import Table, open_models, split_models
from rmu.progress import bar as tqdm
from rmu.runner import restored_mode, trainable_only


def _texts(source, k: int, what: str) -> list[str]:
    try:
        texts = read_corpus(str(source)) if isinstance(source, (str, Path)) else [str(t) for t in source]
    except (OSError, ValueError) as error:
        raise AttackError(f"{what} texts {source!s}: {error}") from None
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise AttackError(f"the {what} texts are empty")
    return texts[:k]


def select(model, params: Sequence[str] | str = "all") -> dict[str, torch.nn.Parameter]:
    """Parameters named by glob patterns (``*mlp*``, ``model.layers.5.*``), or every one for ``all``."""
    patterns = [params] if isinstance(params, str) else list(params)
    named = dict(model.named_parameters())
    if "all" in patterns:
        return named
    chosen = {n: p for n, p in named.items() if any(fnmatch.fnmatchcase(n, pattern) for pattern in patterns)}
    if not chosen:
        raise AttackError(f"no parameter matches {patterns}; names look like {next(iter(named))}")
    return chosen


@contextlib.contextmanager
def restored(model, parameters: dict[str, torch.nn.Parameter]):
    """Train only ``parameters``; put their values, every requires_grad flag and the mode back on exit."""
    saved = {n: p.detach().clone() for n, p in parameters.items()}
    with restored_mode(model), trainable_only(model, parameters):
        try:
            yield
        finally:
            with torch.no_grad():
                for name, parameter in parameters.items():
                    parameter.copy_(saved[name])
                    parameter.grad = None


def lm_loss(model, tokenizer, texts: list[str], max_len: int) -> torch.Tensor:
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len)
    finally:
        tokenizer.padding_side = side
    device = model.get_input_embeddings().weight.device
    ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
    labels = ids.masked_fill(mask == 0, -100)
    return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss


def finetune_curve(model, tokenizer, task, texts: list[str], *, steps: int, lr: float, batch_size: int,
                   max_len: int, eval_every: int, params, scoring: str, progress: bool, desc: str) -> dict:
    """Train on ``texts``; forget accuracy at step 0 and every ``eval_every`` steps (and the last)."""
    trained = select(model, params)
    points, losses = [], []
    with restored(model, trained):
        optimizer = torch.optim.AdamW(list(trained.values()), lr=lr, weight_decay=0.0)
        points.append({"step": 0, "accuracy": accuracy(model, tokenizer, task, scoring)})
        batches = [texts[i: i + batch_size] for i in range(0, len(texts), batch_size)]
        for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, unit="step", dynamic_ncols=True):
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss = lm_loss(model, tokenizer, batches[(step - 1) % len(batches)], max_len)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if step % eval_every == 0 or step == steps:
                model.eval()
                points.append({"step": step, "accuracy": accuracy(model, tokenizer, task, scoring)})
        model.eval()
    return {"points": points, "losses": losses, "trained_parameters": len(trained),
            "trained_elements": sum(p.numel() for p in trained.values())}


class RelearnSettings(AttackSettings):
    forget_texts: str = Field(description="Forget corpus (the first K documents are used).",
                              json_schema_extra={"path": "file"})
    other_texts: str | None = Field(None, description="Unrelated corpus (control run).",
                                    json_schema_extra={"path": "file"})
    # the fine-tuning
    k: int = Field(8, ge=1, description="Documents to fine-tune on.")
    steps: int = Field(20, ge=1, description="Optimizer steps.")
    lr: float = Field(1e-5, ge=0, description="AdamW learning rate (weight decay 0).")
    batch_size: int = Field(4, ge=1, description="Documents per step.")
    max_len: int = Field(128, ge=1, description="Tokens kept of each document.")
    params: Annotated[list[str], BeforeValidator(as_list)] = Field(
        default_factory=lambda: ["all"], min_length=1,
        description="Glob pattern(s) of parameter names to train, or 'all' (repeat; default all).")
    # the measurement
    eval_every: int = Field(5, ge=1, description="Steps between forget-accuracy measurements.")
    scoring: Scoring = Field("cloze", description="How the evaluator scores the questions.")


class Relearn(Attack):
    """Fine-tune on K forget documents (and on unrelated text); forget accuracy against the step."""

    kind = "relearn"
    title = "Relearning attack"
    settings = RelearnSettings

    def compute(self, settings: RelearnSettings, progress: bool = True, models: dict | None = None,
                questions=None, forget_texts=None, other_texts=None) -> dict:
        task = settings.task(questions)
        corpora = {"forget": _texts(settings.forget_texts if forget_texts is None else forget_texts, settings.k,
                                    "forget")}
        if settings.other_texts is not None:
            corpora["unrelated"] = _texts(settings.other_texts if other_texts is None else other_texts, settings.k,
                                          "unrelated")
        data = {"settings": with_facts(settings, count=len(task), documents={n: len(t) for n, t in corpora.items()}),
                "models": {}}
        for name, model, tokenizer in open_models(settings.models, models):
            data["models"][name] = {
                corpus: finetune_curve(model, tokenizer, task, texts, steps=settings.steps, lr=settings.lr,
                                       batch_size=settings.batch_size, max_len=settings.max_len,
                                       eval_every=settings.eval_every, params=settings.params,
                                       scoring=settings.scoring, progress=progress,
                                       desc=f"relearn {name} on {corpus}")
                for corpus, texts in corpora.items()
            }
        return data

    def tables(self, data: dict) -> list[Table]:
        curves = [(name, corpus, curve) for name, entry in data["models"].items() for corpus, curve in entry.items()]
        accuracy_rows = [[name, corpus, p["step"], p["accuracy"]] for name, corpus, curve in curves
                         for p in curve["points"]]
        training_rows = [[name, corpus, curve["trained_parameters"], curve["trained_elements"],
                          curve["losses"][0] if curve["losses"] else None,
                          curve["losses"][-1] if curve["losses"] else None] for name, corpus, curve in curves]
        return [Table(["model", "trained on", "step", "forget accuracy"], accuracy_rows, "Forget accuracy"),
                Table(["model", "trained on", "parameters", "elements", "first loss", "last loss"], training_rows,
                      "Training")]

    def summary(self, data: dict) -> list[str]:
        return [f"{name} on {corpus}: " + ", ".join(f"{p['step']}: {p['accuracy']:.3f}" for p in curve["points"])
                for name, entry in data["models"].items() for corpus, curve in entry.items()]


def relearn_attack(models: dict, questions, forget_texts, other_texts=None, output: str | Path | None = None, *,
                   k: int = 8, steps: int = 20, lr: float = 1e-5, batch_size: int = 4, max_len: int = 128,
                   eval_every: int = 5, params: Sequence[str] | str = "all", scoring: str = "cloze",
                   limit: int | None = None, progress: bool = True, plot: bool = True) -> dict:
    """Fine-tune each model on ``k`` forget documents (and on ``k`` unrelated ones); accuracy curves.

    ``forget_texts`` / ``other_texts``: a corpus file (as ``rmu unlearn`` reads) or a list of texts.
    Writes ``relearn.json`` and ``relearn.png`` to ``output``.
    """
    described, loaded = split_models(models)
    (question_source, task), (forget_source, forget), (other_source, other) = (
        split_questions(questions), split_input(forget_texts), split_input(other_texts))
    settings = RelearnSettings.parse(models=described, questions=question_source, forget_texts=forget_source,
                                     other_texts=other_source, k=k, steps=steps, lr=lr, batch_size=batch_size,
                                     max_len=max_len, params=params, eval_every=eval_every, scoring=scoring,
                                     limit=limit)
    return Relearn().run(settings, output, plot=plot, progress=progress,
                         inputs={"models": loaded, "questions": task, "forget_texts": forget, "other_texts": other})
