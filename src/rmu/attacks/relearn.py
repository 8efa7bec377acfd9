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
from typing import Sequence

import torch
from rmu.progress import bar as tqdm

from rmu.attacks.common import (
    AttackError, accuracy, as_models, check_scoring, describe_models, load_questions, write_json,
)
from rmu.data import read_corpus
from rmu.outputs import writes_folder
from rmu.runner import restored_mode, trainable_only

RESULT_FILE = "relearn.json"


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


@writes_folder("attack relearn", inputs=("models", "questions", "forget_texts", "other_texts"))
def relearn_attack(models: dict, questions, forget_texts, other_texts=None, output: str | Path | None = None, *,
                   k: int = 8, steps: int = 20, lr: float = 1e-5, batch_size: int = 4, max_len: int = 128,
                   eval_every: int = 5, params: Sequence[str] | str = "all", scoring: str = "cloze",
                   limit: int | None = None, progress: bool = True, plot: bool = True) -> dict:
    """Fine-tune each model on ``k`` forget documents (and on ``k`` unrelated ones); accuracy curves.

    ``forget_texts`` / ``other_texts``: a corpus file (as ``rmu unlearn`` reads) or a list of texts.
    Writes ``relearn.json`` and ``relearn.png`` to ``output``.
    """
    check_scoring(scoring)
    for name, value in (("k", k), ("steps", steps), ("batch_size", batch_size), ("max_len", max_len),
                        ("eval_every", eval_every)):
        if value < 1:
            raise AttackError(f"{name} must be at least 1, got {value}")
    if lr < 0:
        raise AttackError("lr must be 0 or more")
    task = load_questions(questions, limit)
    corpora = {"forget": _texts(forget_texts, k, "forget")}
    if other_texts is not None:
        corpora["unrelated"] = _texts(other_texts, k, "unrelated")
    data = {"kind": "relearn",
            "settings": {"k": k, "steps": steps, "lr": lr, "batch_size": batch_size, "max_len": max_len,
                         "eval_every": eval_every, "params": params, "scoring": scoring, "questions": task.name,
                         "count": len(task), "models": describe_models(models),
                         "documents": {n: len(t) for n, t in corpora.items()}},
            "models": {}}
    for name, (model, tokenizer) in as_models(models).items():
        data["models"][name] = {
            corpus: finetune_curve(model, tokenizer, task, texts, steps=steps, lr=lr, batch_size=batch_size,
                                   max_len=max_len, eval_every=eval_every, params=params, scoring=scoring,
                                   progress=progress, desc=f"relearn {name} on {corpus}")
            for corpus, texts in corpora.items()
        }
    if output is not None:
        output = Path(output)
        write_json(output / RESULT_FILE, data)
        if plot:
            from rmu.attacks import plots

            plots.save_figure(plots.plot_relearn(data), output / "relearn.png")
    return data
