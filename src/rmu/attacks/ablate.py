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
from pathlib import Path
from typing import Sequence

import torch
from rmu.progress import bar as tqdm

from rmu.analysis.common import AnalysisError, forget_batches, layer_output
from rmu.attacks.common import (
    AttackError, accuracy, as_models, check_scoring, describe_models, load_questions, write_json,
)
from rmu.outputs import writes_folder
from rmu.run_folder import VECTORS_FILE
from rmu.structure import check_layer, find_structure, layer_hidden, with_layer_hidden

RESULT_FILE = "ablate.json"


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


@writes_folder("attack ablate", inputs=("models", "questions", "base", "forget_texts", "control_vectors", "retain_questions"))
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
    check_scoring(scoring)
    if base is None and control_vectors is None:
        raise AttackError("give the base model and forget texts (diff direction) and/or control vectors (u)")
    if base is not None and forget_texts is None:
        raise AttackError("the diff direction needs forget texts (a corpus file or list) besides the base model")
    project_layers = [layer] if project_layers is None else list(project_layers)
    tasks = {"forget": load_questions(questions, limit)}
    if retain_questions is not None:
        tasks["retain"] = load_questions(retain_questions, limit)
    loaded = as_models(models)
    base_pair = as_models({"base": base})["base"] if base is not None else None
    data = {"kind": "ablate",
            "settings": {"layer": layer, "project_layers": project_layers, "scoring": scoring, "batch_size": batch_size,
                         "max_len": max_len, "max_batches": max_batches, "models": describe_models(models),
                         "questions": {r: t.name for r, t in tasks.items()},
                         "count": {r: len(t) for r, t in tasks.items()}},
            "models": {}}

    def scores(model, tokenizer):
        return {role: accuracy(model, tokenizer, task, scoring) for role, task in tasks.items()}

    if base_pair is not None:
        data["base"] = scores(*base_pair)
    for name, (model, tokenizer) in tqdm(loaded.items(), desc="ablate", disable=not progress, unit="model"):
        directions = {}
        if base_pair is not None:
            batches = forget_batches(tokenizer, forget_texts, batch_size, max_len, max_batches)
            directions["diff"] = estimate_direction(base_pair[0], model, layer, batches)
        if control_vectors is not None and name in control_vectors:
            directions["u"] = load_direction(control_vectors[name], topic)
        entry = {"none": scores(model, tokenizer), "directions": {}}
        for kind, direction in directions.items():
            with projection_hook(model, project_layers, direction):
                result = scores(model, tokenizer)
            record = {**result, "norm": float(direction.norm())}
            if "u" in directions and kind == "diff":
                u = directions["u"]
                record["cosine_with_u"] = float(torch.nn.functional.cosine_similarity(direction, u, dim=0))
            if base_pair is not None:  # the same projection on the base model: what it costs there
                with projection_hook(base_pair[0], project_layers, direction):
                    record["base_model"] = scores(*base_pair)
            entry["directions"][kind] = record
        data["models"][name] = entry
    if output is not None:
        output = Path(output)
        write_json(output / RESULT_FILE, data)
        if plot:
            from rmu.attacks import plots

            plots.save_figure(plots.plot_ablate(data), output / "ablate.png")
    return data
