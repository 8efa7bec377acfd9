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

from rmu.analysis.common import AnalysisError, decoder_outputs, forget_batches, model_or_path, write_json
from rmu.outputs import writes_folder
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


@writes_folder("analyze token-norms", inputs=("models", "texts"))
def analyze_token_norms(models: dict, texts: Sequence[str] | str | Path, output: str | Path | None = None, *,
                        batch_size: int = 4, max_len: int = 128, max_batches: int | None = 2,
                        progress: bool = True, plot: bool = True) -> dict:
    """:func:`token_norms` for each model (name -> path or (model, tokenizer)); JSON and a plot."""
    from rmu.progress import bar as tqdm

    if not models:
        raise AnalysisError("give at least one model")
    data = {"kind": "token_norms",
            "settings": {"batch_size": batch_size, "max_len": max_len, "max_batches": max_batches,
                         "texts": str(texts) if isinstance(texts, (str, Path)) else f"{len(texts)} texts",
                         "models": {n: str(m) if isinstance(m, (str, Path)) else "in memory"
                                    for n, m in models.items()}},
            "models": {}}
    for name, source in tqdm(models.items(), desc="token norms", disable=not progress, unit="model"):
        model, tokenizer = model_or_path(*source) if isinstance(source, tuple) else model_or_path(source)
        data["models"][name] = {"layers": token_norms(model, tokenizer, texts, batch_size=batch_size,
                                                      max_len=max_len, max_batches=max_batches)}
    if output is not None:
        output = Path(output)
        write_json(output / RESULT_FILE, data)
        if plot:
            from rmu import plots

            plots.save_figure(plots.plot_token_norms(data), output / "token_norms.png")
    return data
