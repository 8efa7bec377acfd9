"""Precision and memory switches on the real SmolLM2-135M, on CPU: float32, bfloat16, checkpointing.

    RMU_CACHE=/tmp/rmucache MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \\
        python benchmarks/bench_precision.py

Each variant runs the same RMU job (layer 7, down projections of layers 5-7 trained, batch 4 x 512
tokens by default, 10 steps) in a fresh child process and reports: the median step time (steps
after the first), the peak resident memory above the child's baseline (after imports, before the
model is loaded), and the final losses. Linux carries a parent's peak RSS over fork/exec, so this
launcher imports nothing heavy and only starts children; the malloc settings keep freed memory in
the heap so that the peak is the real high-water mark rather than an mmap artefact.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import peak_rss_mib

VARIANTS = {
    "float32": dict(dtype="float32"),
    "bfloat16": dict(dtype="bfloat16"),
    "float32 + checkpointing": dict(dtype="float32", gradient_checkpointing=True),
    "bfloat16 + checkpointing": dict(dtype="bfloat16", gradient_checkpointing=True),
}

WORDS = ("pathogen protein virus cell enzyme toxin sequence gene culture strain host receptor assay "
         "the of and to in is was for on with as by at from that which").split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads in each child (0: torch's default)")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args, VARIANTS[args.child])))
        return
    results = {name: measure_in_child(name, args) for name in VARIANTS}
    print_table(results, args)


def measure_in_child(name: str, args) -> dict:
    command = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--batch", str(args.batch),
               "--length", str(args.length), "--layer", str(args.layer), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_variant(args, switches: dict) -> dict:
    import random
    import statistics
    import tempfile
    import time

    import torch

    from rmu.config import make_config
    from rmu.demo.model import smollm2_path
    from rmu.engine import unlearn

    if args.threads:
        torch.set_num_threads(args.threads)
    model = smollm2_path(progress=False)
    baseline = peak_rss_mib()
    rng = random.Random(0)
    words = args.length * 2  # enough words to fill the token budget

    def documents(count: int) -> list[str]:
        return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(count)]

    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        forget, retain = Path(folder) / "forget.jsonl", Path(folder) / "retain.txt"
        count = args.steps * args.batch
        forget.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents(count)))
        retain.write_text("\n".join(documents(count)) + "\n")
        config = make_config(dict(
            model=str(model), forget={"bio": str(forget)}, retain=[str(retain)], layer=args.layer,
            steps=args.steps, batch_size=args.batch, max_len=args.length, retain_max_len=args.length, min_len=0,
            device="cpu", steering_coeff=20.0, alpha=100.0, **switches,
        ))
        result = unlearn(config, callbacks=(lambda record: stamps.append(time.perf_counter()),), progress=False)
    step_seconds = [b - a for a, b in zip(stamps, stamps[1:])]  # every step but the first (warm-up)
    last = result.records[-1]
    return {
        "step_s": statistics.median(step_seconds),
        "peak_mib": peak_rss_mib() - baseline,
        "forget_loss": last["forget_loss"],
        "retain_loss": last["retain_loss"],
        "threads": torch.get_num_threads(),
    }


def print_table(results: dict, args) -> None:
    reference = results["float32"]
    print(f"SmolLM2-135M on CPU ({reference['threads']} threads), layer {args.layer}, batch {args.batch} x "
          f"{args.length} tokens, {args.steps} steps; memory = peak RSS above the child's baseline")
    print(f"{'variant':26} {'step s':>7} {'x f32':>6} {'peak MiB':>9} {'x f32':>6} "
          f"{'forget loss':>12} {'retain loss':>12} {'d forget':>9} {'d retain':>9}")
    for name, r in results.items():
        print(f"{name:26} {r['step_s']:7.2f} {r['step_s'] / reference['step_s']:6.2f} {r['peak_mib']:9.0f} "
              f"{r['peak_mib'] / reference['peak_mib']:6.2f} {r['forget_loss']:12.5g} {r['retain_loss']:12.5g} "
              f"{relative(r['forget_loss'], reference['forget_loss']):9.2%} "
              f"{relative(r['retain_loss'], reference['retain_loss']):9.2%}")


def relative(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference) if reference else float("nan")


if __name__ == "__main__":
    main()
