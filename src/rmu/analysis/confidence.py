"""Token confidence on forget questions: the max logit (MaxLogit) of greedily generated tokens.

For each question, the prompt (the evaluator's prompt of a scoring: cloze, letter, or the bare
question for completion) is fed to the model and ``tokens`` tokens are generated greedily (argmax,
no stopping at end-of-sequence, so every question gives exactly ``tokens`` values). The value
recorded for a generated token is the largest raw logit (before softmax) at the step that produced
it. The paper's claim: after RMU the distribution of these values moves down and narrows.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Sequence

import torch
from rmu.progress import bar as tqdm

from rmu.analysis.common import AnalysisError, model_or_path, write_json
from rmu.eval.prompts import SCORINGS, prompt_and_continuations
from rmu.eval.tasks import Task, load_task
from rmu.outputs import writes_folder
from rmu.runner import eval_mode

# the evaluator's prompt of each scoring; "completion" feeds the question itself ("The symbol of iron is")
PROMPTS = {scoring: (lambda q, s=scoring: prompt_and_continuations(q, s)[0]) for scoring in SCORINGS}
RESULT_FILE = "confidence.json"


@torch.no_grad()
def generated_max_logits(model, tokenizer, prompt: str, tokens: int = 30) -> tuple[list[float], list[int]]:
    """Greedy generation of ``tokens`` tokens after ``prompt``: (max logit per token, token ids)."""
    if tokens < 1:
        raise AnalysisError("tokens must be at least 1")
    device = model.get_input_embeddings().weight.device
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
    if ids.shape[1] == 0:
        raise AnalysisError(f"prompt {prompt!r} encodes to no tokens")
    maxima, generated = [], []
    with eval_mode(model):
        output = model(input_ids=ids, use_cache=True)
        for index in range(tokens):
            logits = output.logits[0, -1].float()
            best = int(logits.argmax())
            maxima.append(float(logits[best]))
            generated.append(best)
            if index + 1 < tokens:
                output = model(input_ids=torch.tensor([[best]], device=device), use_cache=True,
                               **_cache_argument(model, output))
    return maxima, generated


def _cache_argument(model, output) -> dict:
    """The previous step's key/value cache, under the name this transformers version uses."""
    if "cache" in inspect.signature(model.forward).parameters and getattr(output, "cache", None) is not None:
        return {"cache": output.cache}
    return {"past_key_values": output.past_key_values}


def summarize(values: Sequence[float]) -> dict:
    """Mean and variance (the maximum-likelihood normal fit: variance over n) of the values."""
    n = len(values)
    if n == 0:
        raise AnalysisError("no values to summarise")
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / n
    return {"count": n, "mean": mean, "variance": variance, "std": math.sqrt(variance)}


@writes_folder("analyze confidence", inputs=("models", "questions"))
def analyze_confidence(models: dict, questions: Sequence[str | Path | Task] | str | Path | Task,
                       output: str | Path | None = None, *, tokens: int = 30, limit: int | None = None,
                       prompt: str = "cloze", progress: bool = True, plot: bool = True,
                       keep_text: bool = True) -> dict:
    """MaxLogit distribution of greedy generations on ``questions`` for each model.

    ``models``: name -> checkpoint path, or name -> (model, tokenizer); typically
    ``{"base": ..., "unlearned": ...}``. ``questions``: forget question tasks (names or files).
    Writes ``confidence.json`` and ``confidence.png`` to ``output`` when given.
    """
    if not models:
        raise AnalysisError("give at least one model")
    if prompt not in PROMPTS:
        raise AnalysisError(f"unknown prompt {prompt!r}; use {', '.join(PROMPTS)}")
    if tokens < 1:
        raise AnalysisError("tokens must be at least 1")
    if isinstance(questions, (str, Path, Task)):
        questions = [questions]
    tasks = []
    for item in questions:
        try:
            tasks.append(load_task(item).head(limit))
        except (FileNotFoundError, ValueError) as error:
            raise AnalysisError(f"questions {item!s}: {error}") from None
    prompts = [PROMPTS[prompt](q) for task in tasks for q in task.questions]
    if not prompts:
        raise AnalysisError("no questions")
    data = {"kind": "confidence",
            "settings": {"tokens": tokens, "prompt": prompt, "limit": limit, "questions": [t.name for t in tasks],
                         "models": {n: str(m) if isinstance(m, (str, Path)) else "in memory" for n, m in models.items()}},
            "models": {}}
    for name, source in models.items():
        model, tokenizer = model_or_path(*source) if isinstance(source, tuple) else model_or_path(source)
        values, texts = [], []
        for text in tqdm(prompts, desc=f"generating ({name})", disable=not progress, unit="question"):
            maxima, ids = generated_max_logits(model, tokenizer, text, tokens)
            values += maxima
            if keep_text:
                texts.append(tokenizer.decode(ids))
        data["models"][name] = {**summarize(values), "max_logits": values}
        if keep_text:
            data["models"][name]["generations"] = [{"prompt": p, "generated": g} for p, g in zip(prompts, texts)]
    if output is not None:
        output = Path(output)
        write_json(output / RESULT_FILE, data)
        if plot:
            from rmu import plots

            plots.save_figure(plots.plot_confidence(data), output / "confidence.png")
    return data
