"""Peak memory per rank when loading for ``--fsdp``: sharded as read, against whole on every rank.

A Llama-shaped model (width 1024, 16 layers, built offline) is saved as a safetensors checkpoint.
Two ``torch.distributed.run`` jobs of 2 CPU processes (gloo) then each prepare layer ``l``:

* ``sharded`` - what ``rmu unlearn --fsdp`` does: :func:`rmu.distributed.load_sharded` shards
  decoder layers 0..l (and the frozen copy of the updated layers) on the meta device, then each
  rank reads only its rows;
* ``whole`` - what ``--fsdp --full-load`` and the public code do: every rank loads layers 0..l
  (here only 0..l, already the cheaper case), copies the updated layers, then shards them.

Then each rank runs one forward pass to layer ``l`` (stopped there, as the engine's frozen pass
is): in float32 on the CPU a whole load leaves the weights memory-mapped until they are touched,
so only after a forward does its memory show. Each rank reports its peak RSS (``ru_maxrss``)
minus a baseline rank that builds the same model skeleton on the meta device and joins the
process group. Memory, unlike time, does not depend on machine load.

glibc's malloc raises its mmap threshold after the first large free, after which the memory of
each all-gathered layer that FSDP frees stays in the process (reusable, but counted in RSS on
CPU; CUDA's caching allocator has no such effect). The jobs run with ``MALLOC_MMAP_THRESHOLD_``
fixed at 1 MiB so that freed layers leave RSS; set it the same way for ``--fsdp`` runs on CPU.

    python benchmarks/bench_fsdp_load.py [--layer 11]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import peak_rss_mib

WIDTH, LAYERS, FIRST_OFFSET = 1024, 16, 2


def build(folder: Path) -> None:
    from rmu.testing import save_tiny_model

    save_tiny_model(folder, "llama", num_layers=LAYERS, hidden=WIDTH)


def worker(folder: str, mode: str, layer: int, output: str) -> None:
    import torch

    from rmu import distributed
    from rmu.distributed import UpdatedLayers, load_sharded, session, shard_updated_layers
    from rmu.loading import load_model, truncated_skeleton
    from rmu.structure import find_structure

    torch.set_num_threads(1)
    with session("cpu") as ranks:
        first = layer - FIRST_OFFSET
        if mode == "baseline":  # libraries imported, skeleton built, process group joined, nothing loaded
            truncated_skeleton(Path(folder), layer, torch.float32)
            distributed.device_mesh(ranks)
        else:
            if mode == "sharded":
                model, _, copies = load_sharded(folder, layer, first, ranks, torch.float32)
            else:
                model, _ = load_model(folder, upto_layer=layer)
                copies = None
            layers = find_structure(model).layers
            shard_updated_layers(UpdatedLayers([layers[i] for i in range(first, layer + 1)]), ranks, copies)
            forward_to_layer(model, layers[layer])
        Path(output, f"{mode}{ranks.rank}.json").write_text(json.dumps({"peak_rss_mib": peak_rss_mib()}))


class StopForward(Exception):
    pass


def forward_to_layer(model, layer) -> None:
    import torch

    def stop(*_):
        raise StopForward

    handle = layer.register_forward_hook(stop)
    try:
        with torch.no_grad():
            model(input_ids=torch.randint(0, 200, (4, 128)), use_cache=False)
    except StopForward:
        pass
    finally:
        handle.remove()


def run(folder: Path, mode: str, layer: int, output: Path) -> list[float]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
               "--worker", mode, "--folder", str(folder), "--layer", str(layer), "--output", str(output)]
    environment = os.environ | {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    subprocess.run(command, check=True, env=environment, capture_output=True)
    return [json.loads((output / f"{mode}{rank}.json").read_text())["peak_rss_mib"] for rank in range(2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=11)
    parser.add_argument("--worker", choices=["sharded", "whole", "baseline"])
    parser.add_argument("--folder")
    parser.add_argument("--output")
    args = parser.parse_args()
    if args.worker:
        worker(args.folder, args.worker, args.layer, args.output)
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        build(scratch / "model")
        size = sum(f.stat().st_size for f in (scratch / "model").glob("*.safetensors")) / 2**20
        print(f"model: width {WIDTH}, {LAYERS} layers, {size:.0f} MiB float32; layer {args.layer}, 2 ranks (gloo)")
        baseline = run(scratch / "model", "baseline", args.layer, scratch)
        results = {}
        for mode in ("whole", "sharded"):
            peaks = run(scratch / "model", mode, args.layer, scratch)
            results[mode] = [peak - base for peak, base in zip(peaks, baseline)]
            print(f"{mode:8s} peak above baseline per rank: " + ", ".join(f"{p:.0f} MiB" for p in results[mode]))
        print(f"sharded / whole, rank 0: {results['sharded'][0] / results['whole'][0]:.2f}")
        print(json.dumps({"model_mib": size, "layer": args.layer, "above_baseline_mib": results}))


if __name__ == "__main__":
    main()
