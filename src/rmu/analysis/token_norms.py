"""Token norms per layer: find the attention sink before it hijacks the losses.

RMU's losses are mean squared errors over tokens, and Adaptive RMU's coefficient is a mean of
token norms. Many LMs carry "massive activations": one position (the first real token, the
attention sink) whose hidden state is tens to thousands of times larger than the others' from some
layer on. That one token then outweighs all others in every MSE. This analysis reports, per
decoder layer, over the real tokens of some texts: the median token norm, the mean, the mean
without each row's first real token, the first real token's mean norm, and the largest norm. A
first-token norm far above the median at the steered layer is the cue for ``--mask-first-token``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from pydantic import Field

from rmu.analysis.common import decoder_outputs, forget_batches
from rmu.experiments.base import Experiment, NamedModels, Settings, Table, open_models, split_models
from rmu.runner import eval_mode
from rmu.structure import find_structure

RESULT_FILE = "token_norms.json"


@torch.no_grad()
def token_norms(model, tokenizer, texts: Sequence[str] | str | Path, *, batch_size: int = 4, max_len: int = 128,
                max_batches: int | None = 2) -> list[dict]:
    """Per decoder layer: median, mean, mean without the first token, first token's mean, max norm."""
    structure = find_structure(model)
    device = model.get_input_embeddings().weight.device
    batches = [b.to(device) for b in forget_batches(tokenizer, texts, batch_size, max_len, max_batches)]
    norms: list[list[torch.Tensor]] = [[] for _ in range(structure.num_layers)]
    first: list[list[torch.Tensor]] = [[] for _ in range(structure.num_layers)]
    with eval_mode(model):
        for batch in batches:
            outputs = decoder_outputs(model, batch.input_ids, batch.attention_mask)
            real = batch.attention_mask.bool()
            rows = torch.arange(real.shape[0], device=real.device)
            first_real = batch.attention_mask.argmax(dim=1)
            for layer, hidden in enumerate(outputs):
                per_token = hidden.float().norm(dim=-1)
                norms[layer].append(per_token[real].cpu())
                first[layer].append(per_token[rows, first_real].cpu())
    results = []
    for layer in range(structure.num_layers):
        every, sinks = torch.cat(norms[layer]), torch.cat(first[layer])
        rest_count = every.numel() - sinks.numel()
        results.append({
            "layer": layer,
            "median": float(every.median()),
            "mean": float(every.mean()),
            "mean_without_first": float((every.sum() - sinks.sum()) / rest_count) if rest_count else float("nan"),
            "first_token": float(sinks.mean()),
            "max": float(every.max()),
        })
    return results


class TokenNormsSettings(Settings):
    models: NamedModels = Field(description="A model to measure, e.g. base=PATH (repeat).",
                                json_schema_extra={"cli": "--model", "metavar": "NAME=PATH", "path": "dir"})
    texts: str = Field(description="Texts the hidden states come from (a corpus file, e.g. the forget corpus).",
                       json_schema_extra={"path": "file"})
    max_batches: int | None = Field(2, ge=1, description="Batches of texts used.",
                                    json_schema_extra={"cli": "--batches"})
    batch_size: int = Field(4, ge=1, description="Texts per batch.")
    max_len: int = Field(128, ge=1, description="Tokens kept of each text.")


class TokenNorms(Experiment):
    """Per layer: median token norm against the first real token's (the attention sink); see --mask-first-token."""

    kind = "token_norms"
    title = "Token norms"
    command = "analyze token-norms"
    settings = TokenNormsSettings

    def compute(self, settings: TokenNormsSettings, progress: bool = True, models: dict | None = None,
                texts: Sequence[str] | None = None) -> dict:
        from rmu.progress import bar as tqdm

        source = settings.texts if texts is None else texts
        data = {"models": {}}
        for name, model, tokenizer in tqdm(open_models(settings.models, models), total=len(settings.models),
                                           desc="token norms", disable=not progress, unit="model"):
            data["models"][name] = {"layers": token_norms(model, tokenizer, source, batch_size=settings.batch_size,
                                                          max_len=settings.max_len,
                                                          max_batches=settings.max_batches)}
        return data

    def figures(self, data: dict) -> dict:
        from rmu import plots

        return {"token_norms.png": plots.plot_token_norms(data)}

    def tables(self, data: dict) -> list[Table]:
        header = ["model", "layer", "median", "mean", "mean without first token", "first token", "max"]
        rows = [[m, r["layer"], r["median"], r["mean"], r["mean_without_first"], r["first_token"], r["max"]]
                for m, e in data["models"].items() for r in e["layers"]]
        return [Table(header, rows)]

    def summary(self, data: dict) -> list[str]:
        lines = []
        for name, entry in data["models"].items():
            lines.append(f"{name}: layer: median / first-token norm")
            lines.append("  " + ", ".join(f"{r['layer']}: {r['median']:.4g} / {r['first_token']:.4g}"
                                          for r in entry["layers"]))
        return lines


def analyze_token_norms(models: dict, texts: Sequence[str] | str | Path, output: str | Path | None = None, *,
                        batch_size: int = 4, max_len: int = 128, max_batches: int | None = 2,
                        progress: bool = True, plot: bool = True) -> dict:
    """:func:`token_norms` for each model (name -> path or (model, tokenizer)); JSON and a plot."""
    described, loaded = split_models(models)
    in_memory = not isinstance(texts, (str, Path))
    settings = TokenNormsSettings.parse(models=described, texts=f"{len(texts)} texts" if in_memory else str(texts),
                                        batch_size=batch_size, max_len=max_len, max_batches=max_batches)
    return TokenNorms().run(settings, output, plot=plot, progress=progress,
                            inputs={"models": loaded, "texts": list(texts) if in_memory else None})
