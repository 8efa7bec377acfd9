"""Peak memory of loading only layers 0..l (``load_model(upto_layer=l)``) against depth.

Two models of equal width but different depth are built offline and saved as sharded checkpoints;
each is loaded up to the same layer ``l`` in its own subprocess, which then runs one forward pass
to layer ``l`` (stopped there by a hook, as the engine does). The child's peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is what counts; a child that only imports the
libraries gives the baseline subtracted to get the model's share. If peak memory grows with ``l``
and not with depth, the deep/shallow ratio is close to 1.

Both float32 and bfloat16 loads are measured. In float32 from a float32 checkpoint on the CPU,
transformers' own full load memory-maps the shards and leaves untouched pages on disk, so a
forward that stops at layer l touches about as much as a partial load: the full load only costs
what is touched. Any cast (bfloat16 here), a move to a GPU or a copy of the model touches every
weight, and then the full load costs about depth/(l+1) times more than the partial one.

The same comparison runs on SmolLM2-135M-Instruct (layer 7 vs a full load) when the folder
``$RMU_CACHE/models/SmolLM2-135M-Instruct`` or ``~/.cache/rmu/models/SmolLM2-135M-Instruct``
exists; it is skipped with a message otherwise.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 python benchmarks/bench_partial_load.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import peak_rss_mib

WIDTH = 512
DEEP, SHALLOW = 48, 12
LAYER = 7
BATCH, TOKENS = 4, 128


class StopForward(Exception):
    """Raised by the hook on layer l: nothing after it is needed."""


def child(folder: str | None, upto_layer: int | None, dtype: str) -> None:
    """Load (unless folder is None), run a forward to layer LAYER, print peak RSS as JSON."""
    import torch
    import transformers.models.llama.modeling_llama  # noqa: F401  (part of the baseline)

    from rmu.loading import load_model
    from rmu.structure import find_structure

    torch.set_num_threads(2)
    result = {"peak_rss_mib": peak_rss_mib()}
    if folder is not None:
        start = time.perf_counter()
        model, _ = load_model(folder, upto_layer=upto_layer, dtype=getattr(torch, dtype))
        result["load_s"] = time.perf_counter() - start
        result["parameters"] = sum(p.numel() for p in model.parameters())

        def stop(module, inputs, output):
            raise StopForward

        find_structure(model).layers[LAYER].register_forward_hook(stop)
        vocab = model.get_input_embeddings().num_embeddings
        input_ids = torch.randint(0, vocab, (BATCH, TOKENS), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            try:
                model(input_ids=input_ids, use_cache=False)
            except StopForward:
                pass
        result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def measure(folder: Path | None, upto_layer: int | None, dtype: str = "float32") -> dict:
    """Run ``child`` in a fresh interpreter so that each peak is its own."""
    command = [sys.executable, __file__, "--child", str(folder) if folder else "-", "--dtype", dtype]
    if upto_layer is not None:
        command += ["--upto", str(upto_layer)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def build_models(root: Path) -> dict[int, Path]:
    """Build and save both models in a subprocess.

    Linux carries a process's peak RSS over fork and exec, so a parent that had held the deep
    model would lend its peak to every child measured after it.
    """
    command = [sys.executable, __file__, "--build", str(root)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return {depth: root / f"depth{depth}" for depth in (DEEP, SHALLOW)}


def build(root: Path) -> None:
    from rmu.testing import tiny_model

    for depth in (DEEP, SHALLOW):
        model, tokenizer = tiny_model("llama", num_layers=depth, hidden=WIDTH)
        model.save_pretrained(root / f"depth{depth}", max_shard_size="100MB")
        tokenizer.save_pretrained(root / f"depth{depth}")


def report(label: str, figures: dict, baseline: float) -> None:
    net = figures["peak_rss_mib"] - baseline
    print(
        f"  {label:<30} peak RSS {figures['peak_rss_mib']:7.1f} MiB  (model share {net:6.1f} MiB)"
        f"  params {figures['parameters'] / 1e6:6.2f} M  load {figures['load_s']:5.2f} s"
    )


def ratio(label: str, numerator: dict, denominator: dict, baseline: float) -> None:
    peak = numerator["peak_rss_mib"] / denominator["peak_rss_mib"]
    share = (numerator["peak_rss_mib"] - baseline) / (denominator["peak_rss_mib"] - baseline)
    print(f"  ratio {label:<24} peak RSS {peak:.3f}   model share {share:.3f}")


def synthetic(baseline: float, dtypes: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_models(Path(tmp))
        for dtype in dtypes:
            print(f"Equal width {WIDTH}, depth {DEEP} vs {SHALLOW}, up to layer {LAYER}, {dtype}:")
            deep = measure(folders[DEEP], LAYER, dtype)
            shallow = measure(folders[SHALLOW], LAYER, dtype)
            deep_full = measure(folders[DEEP], None, dtype)
            report(f"depth {DEEP}, layers 0..{LAYER}", deep, baseline)
            report(f"depth {SHALLOW}, layers 0..{LAYER}", shallow, baseline)
            report(f"depth {DEEP}, full load", deep_full, baseline)
            ratio("deep/shallow", deep, shallow, baseline)
            ratio("deep full/partial", deep_full, deep, baseline)


def smollm2_folder() -> Path | None:
    roots = [Path(os.environ["RMU_CACHE"])] if os.environ.get("RMU_CACHE") else []
    roots.append(Path.home() / ".cache" / "rmu")
    for root in roots:
        folder = root / "models" / "SmolLM2-135M-Instruct"
        if folder.is_dir():
            return folder
    return None


def smollm2(baseline: float, dtypes: list[str]) -> None:
    folder = smollm2_folder()
    if folder is None:
        print("SmolLM2-135M-Instruct: skipped (no folder under $RMU_CACHE/models or ~/.cache/rmu/models)")
        return
    for dtype in dtypes:
        print(f"SmolLM2-135M-Instruct ({folder}), layers 0..{LAYER} vs full load, {dtype}:")
        partial = measure(folder, LAYER, dtype)
        full = measure(folder, None, dtype)
        report(f"layers 0..{LAYER}", partial, baseline)
        report("full load", full, baseline)
        ratio("full/partial", full, partial, baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--upto", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "float16"],
                        help="load dtype(s) to compare (default: float32 and bfloat16)")
    parser.add_argument("--skip-smollm2", action="store_true", help="only the synthetic comparison")
    args = parser.parse_args()
    dtypes = args.dtype or ["float32", "bfloat16"]
    if args.build is not None:
        build(Path(args.build))
        return
    if args.child is not None:
        child(None if args.child == "-" else args.child, args.upto, dtypes[0])
        return
    baseline = measure(None, None)["peak_rss_mib"]
    print(f"Baseline (interpreter + torch + transformers, no model): {baseline:.1f} MiB")
    synthetic(baseline, dtypes)
    if not args.skip_smollm2:
        smollm2(baseline, dtypes)


if __name__ == "__main__":
    main()
