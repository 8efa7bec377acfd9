"""The engine against the plain reference algorithm, on the real SmolLM2-135M, side by side.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 python benchmarks/bench_engine.py

Step time: both algorithms run in this process on the same batches (layer 7, batch 4 x 512
tokens by default, down projections of layers 5-7 trained); the first step of each is a warm-up and
the median of the rest is compared. Peak memory: each algorithm runs again in a fresh child process
and reports its peak resident memory above the interpreter's baseline (after imports, before the
model is loaded), so the ratio compares what each algorithm itself needs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rmu.config import make_config
from rmu.data import consecutive_batches
from rmu.demo.model import smollm2_path
from rmu.engine import unlearn
from rmu.loading import load_model
from rmu.testing.reference import reference_unlearn

from common import peak_rss_mib

WORDS = ("pathogen protein virus cell enzyme toxin sequence gene culture strain host receptor assay "
         "the of and to in is was for on with as by at from that which").split()


def long_documents(count: int, words: int, seed: int) -> list[str]:
    """Documents long enough to fill the token budget (content does not matter for speed)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)]


def write_corpora(folder: Path, documents: int, words: int) -> tuple[Path, Path]:
    forget, retain = folder / "forget.jsonl", folder / "retain.txt"
    forget.write_text("".join(json.dumps({"text": t}) + "\n" for t in long_documents(documents, words, 1)))
    retain.write_text("\n".join(long_documents(documents, words, 2)) + "\n")
    return forget, retain


def engine_config(args, model: Path, forget: Path, retain: Path, steps: int):
    return make_config(dict(
        model=str(model), forget={"bio": str(forget)}, retain=[str(retain)], layer=args.layer, steps=steps,
        batch_size=args.batch, max_len=args.length, retain_max_len=args.length, min_len=0, device="cpu",
        steering_coeff=20.0, alpha=100.0,
    ))


def time_engine(args, model, forget, retain) -> list[float]:
    stamps = [time.perf_counter()]
    unlearn(engine_config(args, model, forget, retain, args.steps), callbacks=(lambda r: stamps.append(time.perf_counter()),),
            progress=False)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def time_reference(args, model_dir, forget, retain, steps) -> list[float]:
    model, tokenizer = load_model(model_dir)
    config = engine_config(args, model_dir, forget, retain, steps)
    from rmu.data import read_corpus
    from rmu.rules import random_control_vectors

    forget_batches = [consecutive_batches(read_corpus(str(forget), 0), args.batch)]
    retain_batches = [consecutive_batches(read_corpus(str(retain), 0), args.batch)]
    layers = [args.layer - 2, args.layer - 1, args.layer]
    names = [n for n, _ in model.named_parameters() if any(f"layers.{i}.mlp.down_proj" in n for i in layers)]
    vectors = list(random_control_vectors(["bio"], model.config.hidden_size, 0).values())
    stamps = [time.perf_counter()]
    reference_unlearn(model, tokenizer, forget_batches, retain_batches, vectors, names, layer=args.layer,
                      steps=steps, steering_coeff=config.steering_coeff, alpha=config.alpha,
                      max_len=config.max_len, retain_max_len=args.length,
                      on_step=lambda s: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def child(args, which: str) -> None:
    """Run one algorithm for two steps and print its peak memory above the baseline, as JSON."""
    model = smollm2_path(progress=False)
    with tempfile.TemporaryDirectory() as folder:
        forget, retain = write_corpora(Path(folder), 4 * args.batch, args.words)
        baseline = peak_rss_mib()
        if which == "engine":
            unlearn(engine_config(args, model, forget, retain, 2), progress=False)
        else:
            time_reference(args, model, forget, retain, 2)
        print(json.dumps({"baseline_mib": baseline, "peak_mib": peak_rss_mib()}))


def measure_memory(args, which: str) -> dict:
    command = [sys.executable, __file__, "--child", which, "--layer", str(args.layer), "--batch", str(args.batch),
               "--length", str(args.length), "--words", str(args.words)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    measured = json.loads(output.strip().splitlines()[-1])
    print(f"  {which}: {measured}", flush=True)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--words", type=int, default=700, help="words per synthetic document (>= length tokens)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--child", choices=["engine", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args, args.child)
        return

    model = smollm2_path()
    print(f"SmolLM2-135M-Instruct, layer {args.layer}, batch {args.batch} x {args.length} tokens, "
          f"{torch.get_num_threads()} threads, float32, CPU")
    # Memory first: Linux carries a parent's peak RSS into its children, so they must start
    # before this process loads any model.
    engine_memory = measure_memory(args, "engine")
    reference_memory = measure_memory(args, "reference")
    engine_need = engine_memory["peak_mib"] - engine_memory["baseline_mib"]
    reference_need = reference_memory["peak_mib"] - reference_memory["baseline_mib"]
    print(f"peak memory engine {engine_need:7.0f} MiB reference {reference_need:7.0f} MiB "
          f"ratio {engine_need / reference_need:5.2f}x   (above a baseline of "
          f"{engine_memory['baseline_mib']:.0f} MiB after imports)")

    with tempfile.TemporaryDirectory() as folder:
        forget, retain = write_corpora(Path(folder), args.steps * args.batch, args.words)
        engine_times = time_engine(args, model, forget, retain)
        reference_times = time_reference(args, model, forget, retain, args.steps)
    engine_step = statistics.median(engine_times[1:])
    reference_step = statistics.median(reference_times[1:])
    print(f"step time   engine {engine_step:7.2f} s   reference {reference_step:7.2f} s   "
          f"speed-up {reference_step / engine_step:5.2f}x")


if __name__ == "__main__":
    main()
