"""Noise sensitivity of the layers above layer k.

Let h be the output of decoder layer k and g the rest of the network up to the LAST decoder
layer's output (layers k+1..L-1; before the final norm and the LM head). For Gaussian noise xi
added to h, the sensitivity is ``||g(h + xi) - g(h)||^2 / ||g(h)||^2``, computed per token and
averaged over the real (non-pad) tokens of the texts and over ``samples`` noise draws.

Noise scale conventions (``scale_mode``):

- ``relative`` (default): per token t, ``xi_t = scale * ||h_t|| / sqrt(d) * z``, z ~ N(0, I_d), so
  E||xi_t||^2 = scale^2 ||h_t||^2: the same signal-to-noise ratio at every layer, whatever the
  norm of the residual stream there (it grows with depth);
- ``absolute``: ``xi = scale * z``, the same noise vector size at every layer.

With scale 0 the sensitivity is exactly 0. For k = L-1 g is the identity and the value is just
the noise-to-signal ratio, so layers 0..L-2 are measured by default.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Sequence

import torch

from pydantic import Field

from rmu.analysis.common import AnalysisError, forget_batches
from rmu.experiments.base import Experiment, NamedModels, Settings, Table, open_models, split_models
from rmu.experiments.values import OptionalIntList
from rmu.runner import eval_mode, forward_until
from rmu.structure import check_layer, find_structure, layer_hidden, with_layer_hidden

RESULT_FILE = "noise.json"
SCALE_MODES = ("relative", "absolute")
DEFINITION = ("per real token ||g(h+xi)-g(h)||^2/||g(h)||^2, g = layers k+1..L-1 (last decoder layer's output)")


@torch.no_grad()
def _last_output(model, layers, batch, noise_layer: int | None = None, noise_fn=None) -> torch.Tensor:
    """The last decoder layer's output, with ``noise_fn(h)`` added to layer ``noise_layer``'s output."""

    def add_noise(module, args, output):
        hidden = layer_hidden(output)
        return with_layer_hidden(output, hidden + noise_fn(hidden))

    handle = None if noise_layer is None else layers[noise_layer].register_forward_hook(add_noise)
    try:
        hidden = forward_until(layers[-1], lambda: model(input_ids=batch.input_ids,
                                                         attention_mask=batch.attention_mask, use_cache=False),
                               "its last decoder layer")
    finally:
        if handle is not None:
            handle.remove()
    return hidden.float()


def noise_sensitivity(model, tokenizer, texts: Sequence[str] | str | Path, *, layers: Sequence[int] | None = None,
                      scale: float = 0.1, scale_mode: str = "relative", samples: int = 2, seed: int = 0,
                      batch_size: int = 4, max_len: int = 128, max_batches: int | None = 2,
                      progress: bool = True) -> list[dict]:
    """Per layer k: ``{"layer": k, "sensitivity": mean ratio, "per_sample": [...]}``."""
    from rmu.progress import bar as tqdm

    if scale < 0:
        raise AnalysisError("the noise scale must be 0 or more")
    if scale_mode not in SCALE_MODES:
        raise AnalysisError(f"unknown scale mode {scale_mode!r}; use {', '.join(SCALE_MODES)}")
    if samples < 1:
        raise AnalysisError("samples must be at least 1")
    structure = find_structure(model)
    depth = structure.num_layers
    layers = list(range(depth - 1)) if layers is None else sorted(set(int(k) for k in layers))
    check_layer(layers, depth, error=AnalysisError)
    device = model.get_input_embeddings().weight.device
    batches = [b.to(device) for b in forget_batches(tokenizer, texts, batch_size, max_len, max_batches)]
    generator = torch.Generator().manual_seed(seed)

    def make_noise(hidden: torch.Tensor) -> torch.Tensor:
        z = torch.randn(hidden.shape, generator=generator, dtype=torch.float32).to(hidden.device)
        if scale_mode == "relative":
            z = z * hidden.float().norm(dim=-1, keepdim=True) / math.sqrt(hidden.shape[-1])
        return (scale * z).to(hidden.dtype)

    results = []
    with eval_mode(model):
        clean = [_last_output(model, structure.layers, batch) for batch in batches]
        for k in tqdm(layers, desc="noise sensitivity", disable=not progress, unit="layer"):
            per_sample = []
            for _ in range(samples):
                total, count = 0.0, 0
                for batch, reference in zip(batches, clean):
                    noisy = _last_output(model, structure.layers, batch, k, make_noise)
                    ratio = (noisy - reference).pow(2).sum(-1) / reference.pow(2).sum(-1).clamp_min(1e-12)
                    real = batch.attention_mask.bool()
                    total, count = total + float(ratio[real].sum()), count + int(real.sum())
                per_sample.append(total / count)
            results.append({"layer": k, "sensitivity": sum(per_sample) / len(per_sample), "per_sample": per_sample})
    return results


class NoiseSettings(Settings):
    models: NamedModels = Field(description="A model to measure, e.g. base=PATH and unlearned=PATH (repeat).",
                                json_schema_extra={"cli": "--model", "metavar": "NAME=PATH", "path": "dir"})
    texts: str = Field(description="Texts the hidden states come from (a corpus file, e.g. the forget corpus).",
                       json_schema_extra={"path": "file"})
    layers: OptionalIntList = Field(None, description="Layers k to inject noise at: 3,6,9 or 0-10 (default: all "
                                                      "but the last).")
    scale: float = Field(0.1, ge=0, description="Noise scale (see --scale-mode).")
    scale_mode: Literal[SCALE_MODES] = Field("relative", description="relative: E||xi_t|| = scale * ||h_t|| per "
                                                                     "token; absolute: xi = scale * N(0, I).")
    samples: int = Field(2, ge=1, description="Noise draws.")
    max_batches: int | None = Field(2, ge=1, description="Batches of texts used.", json_schema_extra={"cli": "--batches"})
    batch_size: int = Field(4, ge=1, description="Texts per batch.")
    max_len: int = Field(128, ge=1, description="Tokens kept of each text.")
    seed: int = Field(0, description="Seed of the noise draws.")


class Noise(Experiment):
    """||g(h+xi)-g(h)||^2/||g(h)||^2 of the layers above k for Gaussian noise at layer k."""

    kind = "noise"
    title = "Noise sensitivity"
    command = "analyze noise-sensitivity"
    settings = NoiseSettings

    def compute(self, settings: NoiseSettings, progress: bool = True, models: dict | None = None,
                texts: Sequence[str] | None = None) -> dict:
        source = settings.texts if texts is None else texts
        data = {"definition": DEFINITION, "models": {}}
        for name, model, tokenizer in open_models(settings.models, models):
            data["models"][name] = {"layers": noise_sensitivity(
                model, tokenizer, source, layers=settings.layers, scale=settings.scale, scale_mode=settings.scale_mode,
                samples=settings.samples, seed=settings.seed, batch_size=settings.batch_size,
                max_len=settings.max_len, max_batches=settings.max_batches, progress=progress)}
        return data

    def figures(self, data: dict) -> dict:
        from rmu import plots

        return {"noise.png": plots.plot_noise(data)}

    def tables(self, data: dict) -> list[Table]:
        models = list(data["models"])
        layers = [r["layer"] for r in data["models"][models[0]]["layers"]]
        by = {m: {r["layer"]: r["sensitivity"] for r in data["models"][m]["layers"]} for m in models}
        return [Table(["layer k", *models], [[k, *(by[m].get(k) for m in models)] for k in layers])]

    def notes(self, data: dict) -> list[str]:
        return [f"sensitivity: {data.get('definition', DEFINITION)}"]

    def summary(self, data: dict) -> list[str]:
        return [name + ": " + ", ".join(f"{r['layer']}: {r['sensitivity']:.3g}" for r in entry["layers"])
                for name, entry in data["models"].items()]


def analyze_noise(models: dict, texts: Sequence[str] | str | Path, output: str | Path | None = None, *,
                  layers: Sequence[int] | None = None, scale: float = 0.1, scale_mode: str = "relative",
                  samples: int = 2, seed: int = 0, batch_size: int = 4, max_len: int = 128,
                  max_batches: int | None = 2, progress: bool = True, plot: bool = True) -> dict:
    """Noise sensitivity per layer for each model (name -> path or (model, tokenizer))."""
    described, loaded = split_models(models)
    in_memory = not isinstance(texts, (str, Path))
    settings = NoiseSettings.parse(models=described, texts=f"{len(texts)} texts" if in_memory else str(texts),
                                   layers=None if layers is None else list(layers), scale=scale, scale_mode=scale_mode,
                                   samples=samples, seed=seed, batch_size=batch_size, max_len=max_len,
                                   max_batches=max_batches)
    return Noise().run(settings, output, plot=plot, progress=progress,
                       inputs={"models": loaded, "texts": list(texts) if in_memory else None})
