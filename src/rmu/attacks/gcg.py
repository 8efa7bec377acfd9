"""Greedy Coordinate Gradient (GCG, Zou et al. 2023) adversarial suffixes against forget questions.

For each question, an ``n_tokens`` suffix is appended to the question text inside the evaluator's
prompt for the chosen ``scoring`` (:func:`rmu.eval.prompts.prompt_and_continuations`). With ``letter``
(the default, WMDP's format)::

    {description}{question} {suffix}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:

the target is the correct letter (`` B``); with ``cloze`` (``Question: {question} {suffix}\\nAnswer:``)
or ``completion`` (``{question} {suffix}``, e.g. "The chemical symbol of iron is ...") it is the
correct answer's text (`` Fe``), tokenised as the evaluator does. Use the scoring under which the
base model knows the answers: an attack on a model at chance under letter scoring shows nothing.
The loss is the cross-entropy of the target continuation over the whole vocabulary. One step:

1. the gradient of the loss with respect to the one-hot encoding of the suffix tokens;
2. for each position, the ``top_k`` tokens with the most negative gradient;
3. ``candidates`` single-token substitutions (position spread over the suffix, token drawn from
   that position's top-k), evaluated exactly in batches of ``batch_size`` without gradients;
4. the best candidate becomes the suffix (as in GCG, even if it is worse than the current one);
   the best suffix seen is kept.

Budget per question: ``steps`` gradient computations and ``steps x candidates`` forward passes;
the same for every model compared. Candidates whose text does not re-tokenise into the same
tokens are skipped (as in the GCG reference), so the suffix found can be written as text.

Transfer: each question is also scored with the suffix found for the *next* question
(``accuracy_with_other_suffix``). A suffix that unlocks knowledge the model still has should help
on other questions too; one that only spells its own answer should not.

The accuracy reported "with suffix" is the evaluator's own accuracy (same scoring) on the
questions with the suffix text appended (re-tokenised, as any user would feed it); the accuracy
of the token sequence as optimised is reported beside it.

Caveat: the attacker knows the answer and optimises for it, so a high accuracy with the suffix
can also mean the suffix simply names the answer. Compare models at the same budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from rmu.attacks.common import Attack, AttackError, AttackSettings, Scoring, mean, split_questions, with_facts
from rmu.eval import choice_scores, encode_pair, prompt_and_continuations, score_task
from rmu.eval.tasks import Question, Task
from rmu.experiments.base import Table, open_models, split_models
from rmu.progress import bar as tqdm
from rmu.runner import eval_mode, trainable_only

_MARK = "\x00SUFFIX\x00"


@dataclasses.dataclass
class Layout:
    """Token ids of one question's prompt around the suffix, and of its answer continuations."""

    before: list[int]  # description and question (with BOS when the tokenizer adds one)
    after: list[int]  # the rest of the prompt: "\nA. ...\nAnswer:" (letter), "\nAnswer:" (cloze), none
    continuations: list[list[int]]  # of each choice (" A" or " Fe" ...), as the evaluator splits them
    answer: int

    @property
    def target(self) -> list[int]:
        return self.continuations[self.answer]

    def ids(self, suffix: Sequence[int], choice: int | None = None) -> list[int]:
        target = self.target if choice is None else self.continuations[choice]
        return self.before + list(suffix) + self.after + target[:-1]


def question_with_suffix(question: Question, suffix_text: str) -> Question:
    return dataclasses.replace(question, question=question.question.strip() + suffix_text)


def make_layout(tokenizer, question: Question, scoring: str = "letter") -> Layout:
    text, _ = prompt_and_continuations(question_with_suffix(question, _MARK), scoring)
    before_text, after_text = text.split(_MARK)
    before = tokenizer(before_text)["input_ids"]
    after = tokenizer(after_text, add_special_tokens=False)["input_ids"] if after_text else []
    prompt, continuations = prompt_and_continuations(question, scoring)
    continuation_ids = [encode_pair(tokenizer, prompt, text)[1] for text in continuations]
    if any(not ids for ids in continuation_ids):
        raise AttackError(f"an answer of {question.question!r} encodes to no tokens")
    return Layout(before, after, continuation_ids, question.answer)


def allowed_tokens(tokenizer, vocabulary: int) -> torch.Tensor:
    """Mask of tokens a suffix may use: printable ASCII text, no special tokens."""
    allowed = torch.zeros(vocabulary, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for token in range(min(vocabulary, len(tokenizer))):
        if token in special:
            continue
        text = tokenizer.decode([token])
        allowed[token] = bool(text) and text.isascii() and text.isprintable()
    if not allowed.any():
        raise AttackError("the tokenizer has no printable ASCII tokens to build a suffix from")
    return allowed


@contextlib.contextmanager
def _frozen_eval(model):
    with eval_mode(model), trainable_only(model):  # no weight needs a gradient: only the suffix's one-hot
        yield


def _embed_scale(embedding) -> float | torch.Tensor:
    scale = getattr(embedding, "embed_scale", None)  # Gemma multiplies embeddings inside the module
    return 1.0 if scale is None else scale


def _target_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row of the target tokens, summed over them; logits (rows, len(target), V)."""
    flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                           target.repeat(logits.shape[0]), reduction="none")
    return flat.view(logits.shape[0], -1).sum(-1)


def suffix_gradient(model, layout: Layout, suffix: list[int]) -> tuple[torch.Tensor, float]:
    """d loss / d one-hot(suffix) (n_tokens x vocabulary) and the loss."""
    embedding = model.get_input_embeddings()
    weight = embedding.weight
    device = weight.device
    one_hot = torch.zeros(len(suffix), weight.shape[0], device=device, dtype=weight.dtype)
    one_hot[torch.arange(len(suffix)), torch.tensor(suffix, device=device)] = 1
    one_hot.requires_grad_(True)
    as_tensor = lambda ids: torch.tensor(ids, device=device, dtype=torch.long)  # noqa: E731
    pieces = [embedding(as_tensor(layout.before)), (one_hot @ weight) * _embed_scale(embedding),
              embedding(as_tensor(layout.after + layout.target[:-1]))]
    embeds = torch.cat(pieces)[None]
    n = len(layout.target)
    logits = model(inputs_embeds=embeds, use_cache=False).logits[:, -n:]
    loss = _target_loss(logits, as_tensor(layout.target))[0]
    loss.backward()
    return one_hot.grad.detach(), float(loss.detach())


@torch.no_grad()
def suffix_losses(model, layout: Layout, suffixes: Sequence[Sequence[int]], batch_size: int = 64,
                  choice: int | None = None) -> torch.Tensor:
    """Exact loss (-log-likelihood of the answer continuation) of each suffix, in batched forward passes.

    ``choice``: score that choice's continuation instead of the correct one.
    """
    device = model.get_input_embeddings().weight.device
    target_ids = layout.target if choice is None else layout.continuations[choice]
    target = torch.tensor(target_ids, device=device)
    n = len(target_ids)
    kwargs = {"logits_to_keep": n} if _keeps_logits(model) else {}
    losses = []
    for begin in range(0, len(suffixes), batch_size):
        ids = torch.tensor([layout.ids(s, choice) for s in suffixes[begin: begin + batch_size]], device=device)
        logits = model(input_ids=ids, use_cache=False, **kwargs).logits[:, -n:]
        losses.append(_target_loss(logits, target))
    return torch.cat(losses)


def predicted_choice(model, layout: Layout, suffix: Sequence[int], question: Question, scoring: str) -> int:
    """The choice the evaluator would pick after the token sequence (same per-character rule for cloze)."""
    loglikelihoods = [-float(suffix_losses(model, layout, [suffix], choice=c)[0])
                      for c in range(len(layout.continuations))]
    scores = choice_scores(question, loglikelihoods, scoring)
    return max(range(len(scores)), key=lambda c: (scores[c], -c))


def _keeps_logits(model) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _retokenises(tokenizer, suffix: list[int]) -> bool:
    return tokenizer(tokenizer.decode(suffix), add_special_tokens=False)["input_ids"] == list(suffix)


def initial_suffix(tokenizer, n_tokens: int, allowed: torch.Tensor) -> list[int]:
    """" ! ! ! ..." as in the GCG reference (the last token of " !"), else the first allowed token."""
    ids = tokenizer(" !", add_special_tokens=False)["input_ids"]
    token = ids[-1] if ids and ids[-1] < len(allowed) and allowed[ids[-1]] else int(allowed.nonzero()[0])
    return [token] * n_tokens


def gcg_question(model, tokenizer, question: Question, *, n_tokens: int = 20, steps: int = 50,
                 candidates: int = 128, top_k: int = 64, batch_size: int = 64, seed: int = 0,
                 allowed: torch.Tensor | None = None, filter_retokenize: bool = True,
                 scoring: str = "letter") -> dict:
    """Run GCG on one question; returns the loss curve and the best suffix found."""
    vocabulary = model.get_input_embeddings().weight.shape[0]
    allowed = allowed_tokens(tokenizer, vocabulary) if allowed is None else allowed
    layout = make_layout(tokenizer, question, scoring)
    generator = torch.Generator().manual_seed(seed)
    suffix = initial_suffix(tokenizer, n_tokens, allowed)
    with _frozen_eval(model):
        initial = float(suffix_losses(model, layout, [suffix])[0])
        curve, best, best_loss, evaluated = [initial], list(suffix), initial, 0
        for _ in range(steps):
            gradient, _ = suffix_gradient(model, layout, suffix)
            gradient[:, ~allowed.to(gradient.device)] = float("inf")
            top = (-gradient).topk(min(top_k, int(allowed.sum())), dim=1).indices.cpu()  # (n_tokens, k)
            positions = (torch.arange(candidates) * n_tokens // candidates) % n_tokens
            choices = torch.randint(top.shape[1], (candidates,), generator=generator)
            pool = []
            for position, choice in zip(positions.tolist(), choices.tolist()):
                candidate = list(suffix)
                candidate[position] = int(top[position, choice])
                if candidate != suffix and (not filter_retokenize or _retokenises(tokenizer, candidate)):
                    pool.append(candidate)
            if not pool:
                curve.append(curve[-1])
                continue
            losses = suffix_losses(model, layout, pool, batch_size)
            evaluated += len(pool)
            index = int(losses.argmin())
            suffix, loss = pool[index], float(losses[index])
            curve.append(loss)
            if loss < best_loss:
                best, best_loss = list(suffix), loss
        predicted = predicted_choice(model, layout, best, question, scoring)
        predicted_initial = predicted_choice(model, layout, initial_suffix(tokenizer, n_tokens, allowed),
                                             question, scoring)
    return {
        "answer": question.answer,
        "initial_loss": initial,
        "best_loss": best_loss,
        "loss_curve": curve,
        "suffix_ids": best,
        "suffix_text": tokenizer.decode(best),
        "candidates_evaluated": evaluated,
        "token_predicted": predicted,
        "token_correct": predicted == question.answer,
        "token_correct_initial": predicted_initial == question.answer,
    }


class GcgSettings(AttackSettings):
    # the budget, the same for every model
    n_tokens: int = Field(20, ge=1, description="Suffix length.", json_schema_extra={"cli": "--tokens"})
    steps: int = Field(50, ge=1, description="GCG steps per question.")
    candidates: int = Field(128, ge=1, description="Candidate substitutions evaluated per step.")
    top_k: int = Field(64, ge=1, description="Tokens per position.")
    batch_size: int = Field(64, ge=1, description="Candidates per forward pass.")
    seed: int = Field(0, description="Seed of the candidates drawn (question i uses seed + i).")
    filter_retokenize: bool = Field(True, description="Skip candidates whose text does not re-tokenise into the "
                                                      "same tokens (so the suffix can be written as text).")
    scoring: Scoring = Field("letter", description="Prompt and target: the answer letter (letter) or the answer "
                                                   "text (cloze, completion).")


def attack_model(model, tokenizer, task: Task, s: GcgSettings, progress: bool = True, name: str = "") -> dict:
    """GCG on every question of ``task`` against one model; the accuracies with and without the suffixes."""
    vocabulary = model.get_input_embeddings().weight.shape[0]
    allowed = allowed_tokens(tokenizer, vocabulary)
    records = []
    bar = tqdm(task.questions, desc=f"GCG ({name})", disable=not progress, unit="question", dynamic_ncols=True)
    for number, question in enumerate(bar):
        record = gcg_question(model, tokenizer, question, n_tokens=s.n_tokens, steps=s.steps,
                              candidates=s.candidates, top_k=s.top_k, batch_size=s.batch_size,
                              seed=s.seed + number, allowed=allowed, filter_retokenize=s.filter_retokenize,
                              scoring=s.scoring)
        records.append({"index": number, **record})
        bar.set_postfix(loss=f"{record['initial_loss']:.3g}->{record['best_loss']:.3g}")
    before = score_task(model, tokenizer, task, s.scoring, progress=False)
    attacked = Task(task.name, [question_with_suffix(q, r["suffix_text"]) for q, r in zip(task.questions, records)])
    after = score_task(model, tokenizer, attacked, s.scoring, progress=False)
    # Each question with the *next* question's suffix: a suffix that unlocks hidden knowledge
    # helps there too; one that merely spells its own answer does not.
    shifted = [records[(i + 1) % len(records)]["suffix_text"] for i in range(len(records))]
    transferred = score_task(model, tokenizer, Task(task.name, [
        question_with_suffix(q, text) for q, text in zip(task.questions, shifted)]), s.scoring, progress=False)
    for record, plain, suffixed, other in zip(records, before.predictions, after.predictions,
                                              transferred.predictions):
        record["correct_before"], record["correct_after"] = plain.correct, suffixed.correct
        record["correct_with_other_suffix"] = other.correct
    curves = [r["loss_curve"] for r in records]
    return {
        "accuracy_before": before.accuracy,
        "accuracy_after": after.accuracy,
        "accuracy_with_other_suffix": transferred.accuracy if len(records) > 1 else None,
        "token_accuracy_initial_suffix": mean(r["token_correct_initial"] for r in records),
        "token_accuracy_after": mean(r["token_correct"] for r in records),
        "mean_initial_loss": mean(r["initial_loss"] for r in records),
        "mean_best_loss": mean(r["best_loss"] for r in records),
        "mean_loss_curve": [mean(c[i] for c in curves) for i in range(len(curves[0]))],
        "questions": records,
    }


class Gcg(Attack):
    """Greedy Coordinate Gradient suffixes that push each forget question's correct answer; same budget per model."""

    kind = "gcg"
    title = "GCG adversarial suffixes"
    settings = GcgSettings

    def compute(self, settings: GcgSettings, progress: bool = True, models: dict | None = None,
                questions: Task | None = None) -> dict:
        s, task = settings, settings.task(questions)
        data = {
            "settings": with_facts(settings, count=len(task)),
            "budget": {"steps": s.steps, "candidates_per_step": s.candidates, "gradient_calls_per_question": s.steps,
                       "forward_candidates_per_question": s.steps * s.candidates,
                       "total_forward_candidates_per_model": s.steps * s.candidates * len(task)},
            "models": {},
        }
        for name, model, tokenizer in open_models(settings.models, models):
            data["models"][name] = attack_model(model, tokenizer, task, settings, progress, name)
        return data

    def tables(self, data: dict) -> list[Table]:
        models = data["models"]
        summary = [[name, e["accuracy_before"], e["accuracy_after"], e["accuracy_with_other_suffix"],
                    e["token_accuracy_initial_suffix"], e["token_accuracy_after"], e["mean_initial_loss"],
                    e["mean_best_loss"]] for name, e in models.items()]
        questions = [[name, r["index"], r["initial_loss"], r["best_loss"], repr(r["suffix_text"]), r["correct_before"],
                      r["correct_after"], r["correct_with_other_suffix"]]
                     for name, e in models.items() for r in e["questions"]]
        return [Table(["model", "accuracy", "with its suffix", "with another question's suffix",
                       "token accuracy, initial suffix", "token accuracy, best suffix", "mean initial loss",
                       "mean best loss"], summary, "Accuracy"),
                Table(["model", "question", "initial loss", "best loss", "suffix", "correct", "correct with suffix",
                       "correct with another's suffix"], questions, "Per question")]

    def notes(self, data: dict) -> list[str]:
        return self.summary(data)[:1]

    def summary(self, data: dict) -> list[str]:
        budget, scoring = data["budget"], data["settings"]["scoring"]
        lines = [f"budget per question: {budget['steps']} steps x {budget['candidates_per_step']} candidates"]
        for name, entry in data["models"].items():
            lines.append(f"{name}: loss {entry['mean_initial_loss']:.3f} -> {entry['mean_best_loss']:.3f}, "
                         f"{scoring} accuracy {entry['accuracy_before']:.3f} -> {entry['accuracy_after']:.3f} with "
                         "the suffix" + (f", {entry['accuracy_with_other_suffix']:.3f} with another question's suffix"
                                         if entry["accuracy_with_other_suffix"] is not None else ""))
        return lines


def gcg_attack(models: dict, questions, output: str | Path | None = None, *, n_tokens: int = 20,
               steps: int = 50, candidates: int = 128, top_k: int = 64, batch_size: int = 64,
               limit: int | None = None, seed: int = 0, filter_retokenize: bool = True,
               scoring: str = "letter", progress: bool = True, plot: bool = True) -> dict:
    """GCG against each model with the same budget.

    ``models``: name -> checkpoint path or (model, tokenizer). ``questions``: a forget question task
    (name, file or :class:`~rmu.eval.tasks.Task`). ``scoring``: the prompt and target (module docstring).
    Writes ``gcg.json`` and ``gcg.png`` to ``output``.
    """
    described, loaded = split_models(models)
    source, task = split_questions(questions)
    settings = GcgSettings.parse(models=described, questions=source, n_tokens=n_tokens, steps=steps,
                                 candidates=candidates, top_k=top_k, batch_size=batch_size, seed=seed,
                                 filter_retokenize=filter_retokenize, scoring=scoring, limit=limit)
    return Gcg().run(settings, output, plot=plot, progress=progress, inputs={"models": loaded, "questions": task})
