"""Directional ablation: remove the direction RMU writes into layer l, at inference.

RMU pushes forget activations at layer l towards ``c * u``. If the rest of the knowledge survives
underneath, projecting that direction out of layer l's output should bring the answers back.
Two estimates of the direction:

* ``diff``: the mean, over the real tokens of forget-corpus documents, of
  ``h_l(unlearned) - h_l(base)`` (needs the base model);
* ``u``: the control vector itself, from a run's ``control_vectors.safetensors`` (or a tensor).

The projection ``h <- h - (h . d) d`` (``d`` unit) is applied to the output of decoder layer(s)
``project_layers`` (default: the steered layer) by a forward hook, for every token.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Sequence

import torch
from pydantic import Field, model_validator

from rmu.analysis.common import AnalysisError, forget_batches, layer_output
from rmu.attacks.common import (
    Attack, IN_MEMORY, AttackError, AttackSettings, Scoring, accuracy, load_questions, split_input, split_questions,
    with_facts,
)
from rmu.experiments.base import Settings, Table, open_models, split_models
from rmu.experiments.values import OptionalIntList
from rmu.progress import bar as tqdm
from rmu.run_folder import RUN_FILE, VECTORS_FILE
from rmu.structure import check_layer, find_structure, layer_hidden, with_layer_hidden


def project_out(hidden: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``hidden`` without its component along ``direction`` (last dimension); zero direction: unchanged."""
    norm = direction.float().norm()
    if norm == 0:
        return hidden
    unit = (direction.float() / norm).to(hidden.device)
    component = (hidden.float() @ unit)[..., None] * unit
    return (hidden.float() - component).to(hidden.dtype)


@contextlib.contextmanager
def projection_hook(model, layers: int | Sequence[int], direction: torch.Tensor):
    """While active, the output of decoder layer(s) ``layers`` has ``direction`` projected out."""
    structure = find_structure(model)
    layers = [layers] if isinstance(layers, int) else list(layers)
    check_layer(layers, structure.num_layers, error=AttackError)
    if direction.shape != (structure.hidden_size,):
        raise AttackError(f"the direction has shape {tuple(direction.shape)}; the model's hidden size is "
                          f"{structure.hidden_size}")

    def hook(module, args, output):
        return with_layer_hidden(output, project_out(layer_hidden(output), direction))

    handles = [structure.layers[layer].register_forward_hook(hook) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def estimate_direction(base, unlearned, layer: int, batches) -> torch.Tensor:
    """Mean over real tokens of layer-``layer`` output (unlearned - base); ``batches``: TokenBatch list."""
    total, count = None, 0
    for batch in batches:
        try:
            difference = layer_output(unlearned, layer, batch).float() - layer_output(base, layer, batch).float()
        except AnalysisError as error:
            raise AttackError(str(error)) from None
        mask = batch.attention_mask.bool().to(difference.device)
        summed = difference[mask].sum(0)
        total = summed if total is None else total + summed
        count += int(mask.sum())
    if not count:
        raise AttackError("no tokens to estimate the direction from")
    return (total / count).cpu()


def load_direction(control_vectors, topic: str | None = None) -> torch.Tensor:
    """u from a ``control_vectors.safetensors`` file, a {topic: tensor} dict or a tensor."""
    if isinstance(control_vectors, torch.Tensor):
        return control_vectors.float().cpu()
    if isinstance(control_vectors, (str, Path)):
        from safetensors.torch import load_file

        path = Path(control_vectors)
        if path.is_dir():
            path = path / VECTORS_FILE
        if not path.is_file():
            raise AttackError(f"control vectors {path} do not exist")
        control_vectors = load_file(str(path))
    if topic is None:
        if len(control_vectors) != 1:
            raise AttackError(f"the control vectors hold topics {sorted(control_vectors)}; choose one with topic")
        topic = next(iter(control_vectors))
    if topic not in control_vectors:
        raise AttackError(f"no control vector for topic {topic!r}; there are {sorted(control_vectors)}")
    return control_vectors[topic].float().cpu()


class DiffDirection(Settings):
    """The ``diff`` direction: layer l's mean output on forget texts, unlearned minus base model."""

    base: str | None = Field(None, description="Base model, for the diff direction.",
                             json_schema_extra={"path": "dir"})
    forget_texts: str | None = Field(None, description="Forget corpus, for the diff direction.",
                                     json_schema_extra={"path": "file"})
    max_batches: int = Field(8, ge=1, description="Corpus batches for diff.", json_schema_extra={"cli": "--batches"})
    batch_size: int = Field(4, ge=1, description="Texts per corpus batch.")
    max_len: int = Field(128, ge=1, description="Tokens kept of each text.")


class ControlVectorDirection(Settings):
    """The ``u`` direction: each model's own control vector."""

    use_u: bool = Field(False, description="Also project out u from each model folder's "
                                           "control_vectors.safetensors.")
    control_vectors: dict[str, str] | None = Field(
        None, description="Model name -> its control vectors (a file or folder; filled in by --use-u).",
        json_schema_extra={"cli": None, "path": "any"})
    topic: str | None = Field(None, description="Forget topic of u when there are several.")


class AblateSettings(ControlVectorDirection, DiffDirection, AttackSettings):
    retain_questions: str | None = Field(None, description="Retain questions (what the ablation costs).",
                                         json_schema_extra={"metavar": "NAME_OR_FILE", "input": True})
    layer: int | None = Field(None, ge=0, description="Steered layer (default: from the model's run.json).")
    project_layers: OptionalIntList = Field(None, description="Layers whose output is projected, e.g. 3,5-7 "
                                                             "(default: --layer).",
                                           json_schema_extra={"metavar": "LAYERS"})
    scoring: Scoring = Field("cloze", description="How the evaluator scores the questions.")

    @model_validator(mode="after")
    def _complete(self) -> "AblateSettings":
        if self.base is None and not self.use_u and self.control_vectors is None:
            raise ValueError("give the base model (--base) with forget texts (--forget-texts) for the diff "
                             "direction, and/or control vectors (--use-u) for u")
        if self.base is not None and self.forget_texts is None:
            raise ValueError("the diff direction needs forget texts (--forget-texts) besides the base model (--base)")
        if self.use_u and self.control_vectors is None:
            self.control_vectors = _control_vectors(self.models)
        self.use_u = self.control_vectors is not None
        if self.layer is None:
            self.layer = _layer_from_run(self.models)
        if self.project_layers is None:
            self.project_layers = [self.layer]
        return self


def _control_vectors(models: dict[str, str]) -> dict[str, str]:
    found = {}
    for name, folder in models.items():
        path = Path(folder) / VECTORS_FILE
        if not path.is_file():
            raise ValueError(f"--use-u: {folder} has no control_vectors.safetensors (is it an rmu unlearn output?)")
        found[name] = str(path)
    return found


def _layer_from_run(models: dict[str, str]) -> int:
    for folder in models.values():
        run = Path(folder) / RUN_FILE
        if folder != IN_MEMORY and run.is_file():
            return int(json.loads(run.read_text())["config"]["layer"])
    raise ValueError("give --layer (no run.json in the model folders to read it from)")


def ablated(model, tokenizer, directions: dict, layers: list[int], scores, base_pair=None) -> dict:
    """``scores`` of the model as it is and with each direction projected out of ``layers`` (and of the base model)."""
    entry = {"none": scores(model, tokenizer), "directions": {}}
    for kind, direction in directions.items():
        with projection_hook(model, layers, direction):
            record = {**scores(model, tokenizer), "norm": float(direction.norm())}
        if "u" in directions and kind == "diff":
            record["cosine_with_u"] = float(torch.nn.functional.cosine_similarity(direction, directions["u"], dim=0))
        if base_pair is not None:  # the same projection on the base model: what it costs there
            with projection_hook(base_pair[0], layers, direction):
                record["base_model"] = scores(*base_pair)
        entry["directions"][kind] = record
    return entry


class Ablate(Attack):
    """Project the steering direction (mean activation difference, or u) out of layer l; recovered accuracy."""

    kind = "ablate"
    title = "Direction ablation"
    settings = AblateSettings

    def compute(self, settings: AblateSettings, progress: bool = True, models: dict | None = None, questions=None,
                retain_questions=None, base=None, forget_texts=None, control_vectors: dict | None = None) -> dict:
        tasks = {"forget": settings.task(questions)}
        if settings.retain_questions is not None:
            tasks["retain"] = load_questions(settings.retain_questions if retain_questions is None
                                             else retain_questions, settings.limit)
        texts = settings.forget_texts if forget_texts is None else forget_texts
        vectors = {**(settings.control_vectors or {}), **(control_vectors or {})}
        data = {"settings": with_facts(settings, count={r: len(t) for r, t in tasks.items()}), "models": {}}

        def scores(model, tokenizer):
            return {role: accuracy(model, tokenizer, task, settings.scoring) for role, task in tasks.items()}

        base_pair = None
        if settings.base is not None:
            _, *base_pair = next(open_models({"base": settings.base}, {"base": base} if base is not None else None))
            data["base"] = scores(*base_pair)
        for name, model, tokenizer in tqdm(open_models(settings.models, models), total=len(settings.models),
                                           desc="ablate", disable=not progress, unit="model"):
            directions = {}
            if base_pair is not None:
                batches = forget_batches(tokenizer, texts, settings.batch_size, settings.max_len, settings.max_batches)
                directions["diff"] = estimate_direction(base_pair[0], model, settings.layer, batches)
            if name in vectors:
                directions["u"] = load_direction(vectors[name], settings.topic)
            data["models"][name] = ablated(model, tokenizer, directions, settings.project_layers, scores, base_pair)
        return data

    def tables(self, data: dict) -> list[Table]:
        roles = list(data["settings"]["count"]) if isinstance(data["settings"].get("count"), dict) else ["forget"]
        header = ["model", "direction projected out", *roles, "norm", "cosine with u",
                  *(f"base model {role}" for role in roles)]
        rows = [["base", "none", *(data["base"].get(r) for r in roles), None, None, *([None] * len(roles))]] \
            if "base" in data else []
        for name, entry in data["models"].items():
            rows.append([name, "none", *(entry["none"].get(r) for r in roles), None, None, *([None] * len(roles))])
            for kind, record in entry["directions"].items():
                on_base = record.get("base_model", {})
                rows.append([name, kind, *(record.get(r) for r in roles), record["norm"], record.get("cosine_with_u"),
                             *(on_base.get(r) for r in roles)])
        return [Table(header, rows)]

    def notes(self, data: dict) -> list[str]:
        return [f"projected out of the output of layer(s) {data['settings']['project_layers']}"]

    def summary(self, data: dict) -> list[str]:
        lines = [f"base: forget {data['base']['forget']:.3f}"] if "base" in data else []
        for name, entry in data["models"].items():
            parts = [f"none {entry['none']['forget']:.3f}"]
            parts += [f"{k} {v['forget']:.3f}" for k, v in entry["directions"].items()]
            lines.append(f"{name}: forget accuracy with direction removed: " + ", ".join(parts))
        return lines


def ablate_attack(models: dict, questions, output: str | Path | None = None, *, layer: int, base=None,
                  forget_texts=None, control_vectors: dict | None = None, retain_questions=None,
                  project_layers: Sequence[int] | None = None, topic: str | None = None, batch_size: int = 4,
                  max_len: int = 128, max_batches: int = 8, scoring: str = "cloze", limit: int | None = None,
                  progress: bool = True, plot: bool = True) -> dict:
    """Forget (and retain) accuracy of each unlearned model with each direction projected out.

    ``models``: name -> unlearned model (path or (model, tokenizer)); ``base``: the base model (path
    or pair) for the ``diff`` direction, with ``forget_texts`` (corpus file or texts);
    ``control_vectors``: name -> u source (file, folder, dict, tensor) for the ``u`` direction.
    """
    described, loaded = split_models(models)
    (question_source, task), (retain_source, retain) = split_questions(questions), (
        split_questions(retain_questions) if retain_questions is not None else (None, None))
    base_source = None if base is None else split_models({"base": base})[0]["base"]
    texts_source, texts = split_input(forget_texts)
    vectors = None if control_vectors is None else {name: split_input(v) for name, v in control_vectors.items()}
    settings = AblateSettings.parse(
        models=described, questions=question_source, retain_questions=retain_source, base=base_source,
        forget_texts=texts_source, max_batches=max_batches, batch_size=batch_size, max_len=max_len,
        control_vectors=None if vectors is None else {name: source for name, (source, _) in vectors.items()},
        topic=topic, layer=layer, project_layers=project_layers, scoring=scoring, limit=limit)
    in_memory = {name: value for name, (_, value) in (vectors or {}).items() if value is not None}
    return Ablate().run(settings, output, plot=plot, progress=progress,
                        inputs={"models": loaded, "questions": task, "retain_questions": retain,
                                "base": base if isinstance(base, tuple) else None, "forget_texts": texts,
                                "control_vectors": in_memory})
