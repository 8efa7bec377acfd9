"""Several processes give one process's numbers; precision and memory switches keep the numbers.

The multi-process tests start real ``torch.distributed.run`` jobs of 2 CPU processes (gloo), as a
user would, and compare their checkpoints with a single-process run of the same configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rmu.config import load_yaml, make_config
from rmu.distributed import Ranks
from rmu.engine import TrainedTensors, UnlearnError, unlearn
from rmu.testing import save_tiny_model

# 7 documents in batches of 3: rows split 2 + 1 between two ranks, and the last batch (1 row)
# leaves rank 1 with none. Per-sample coefficients, noise and masked losses all take part.
RUN = dict(layer=3, steps=3, batch_size=3, min_len=0, lr=5e-3, alpha=10.0, max_len=24, retain_max_len=24,
           method="adaptive", adaptive_rule="per-sample", beta=3.0, noise=0.05, mask_padding=True, seed=5,
           device="cpu")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    # Its own corpora: lines of unequal length (7, odd) so that padding and uneven shards are exercised.
    folder = tmp_path_factory.mktemp("distributed")
    save_tiny_model(folder / "model", "llama", num_layers=5)
    (folder / "bio.jsonl").write_text("".join(
        json.dumps({"text": f"Toxin {i} is made by pathogen {i % 5} in the laboratory." + " enzyme" * (i % 4)}) + "\n"
        for i in range(7)))
    (folder / "retain.txt").write_text(
        "\n".join(f"The city number {i} is a capital of a country." + " river" * (i % 3) for i in range(7)))
    config = dict(RUN, model=str(folder / "model"), forget={"bio": str(folder / "bio.jsonl")},
                  retain=[str(folder / "retain.txt")])
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def single_process(workspace, tmp_path_factory):
    output = tmp_path_factory.mktemp("single") / "run"
    config = make_config(load_yaml(workspace / "run.yaml") | {"output": str(output)})
    return unlearn(config, progress=False), output


def run_job(command: list[str], cwd) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


LAUNCHES = {
    # rmu's own launcher (torch.distributed.run underneath), data parallel with DDP
    "ddp": lambda config: [sys.executable, "-m", "rmu", "unlearn", "--config", config, "--nproc", "2", "--quiet"],
    # torchrun directly, the updated layers sharded with FSDP2
    "fsdp": lambda config: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m", "rmu", "unlearn", "--config", config, "--fsdp", "--quiet"],
    # the whole model on every rank, then only the updated layers sharded
    "fsdp-full-load": lambda config: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      "--nproc_per_node", "2", "-m", "rmu", "unlearn", "--config", config, "--fsdp",
                                      "--full-load", "--quiet"],
}


@pytest.mark.parametrize("mode", list(LAUNCHES))
def test_two_processes_give_the_single_process_run(workspace, single_process, tmp_path, mode):
    single, single_output = single_process
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(load_yaml(workspace / "run.yaml") | {"output": str(tmp_path / "run")}))
    run_job(LAUNCHES[mode](str(config)), cwd=tmp_path)

    # rank 1 wrote nothing (.run.lock: rank 0's lock on the output)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".run.lock") == ["run", "run.yaml"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in single_output.iterdir())
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(run["steps"]) == len(single.records) == 3
    for logged, expected in zip(run["steps"], single.records):  # full-batch values, not one rank's
        for key in ("forget_loss", "retain_loss", "coeff", "forget_norm", "frozen_forget_norm"):
            assert logged[key] == pytest.approx(expected[key], rel=1e-5), key
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    expected = load_file(str(single_output / "model.safetensors"))
    for name in expected:
        torch.testing.assert_close(weights[name], expected[name], rtol=1e-5, atol=1e-7)
    moved = max((expected[n] - single.original_weights[n]).abs().max().item() for n in single.trained_parameters)
    assert moved > 1e-3  # the weights really changed, so equality above means something


def test_fsdp_loading_reads_each_rank_its_own_rows(workspace, tmp_path):
    """Decoder layers 0..l and the frozen copy are sharded as they are read: each rank holds its rows only."""
    worker = Path(__file__).with_name("fsdp_load_worker.py")
    run_job([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
             str(workspace / "model"), str(tmp_path), "3", "1"], cwd=tmp_path)
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for report in reports:
        assert report["wrong"] == []
        assert (report["layers"], report["copies"]) == (4, 3)  # layers 0..3 kept; copy of the updated 1..3
        assert report["whole"] > 0  # embeddings and final norm, replicated
    sharded = reports[0]["sharded"]
    assert reports[0]["held"] + reports[1]["held"] == sharded  # the two shards make each tensor exactly once
    assert 0.4 * sharded < reports[0]["held"] < 0.6 * sharded


def test_rows_split_as_evenly_as_possible_and_weights_add_up():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1]])
    shares = [Ranks(rank, 2, torch.device("cpu")).share(3, mask) for rank in range(2)]
    assert [s.rows for s in shares] == [slice(0, 2), slice(2, 3)]
    assert sum(s.weight for s in shares) == pytest.approx(1.0) and shares[0].weight == pytest.approx(5 / 6)
    unmasked = [Ranks(rank, 2, torch.device("cpu")).share(3, None).weight for rank in range(2)]
    assert unmasked == pytest.approx([2 / 3, 1 / 3])
    empty = Ranks(1, 2, torch.device("cpu")).share(1, None)
    assert (empty.count, empty.weight) == (0, 0.0)  # borrows a row to join the collectives, adds nothing


def test_gradient_checkpointing_gives_the_same_run(workspace, single_process):
    single, _ = single_process
    config = make_config(load_yaml(workspace / "run.yaml") | {"gradient_checkpointing": True})
    checkpointed = unlearn(config, progress=False)
    assert [r["retain_loss"] for r in checkpointed.records] == pytest.approx(
        [r["retain_loss"] for r in single.records], rel=1e-6)
    for name, value in single.final_weights.items():
        torch.testing.assert_close(checkpointed.final_weights[name], value, rtol=1e-6, atol=1e-8)


def test_half_precision_steps_float32_master_copies():
    weight = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    tensors = TrainedTensors({"w": weight})
    optimizer = torch.optim.SGD(list(tensors.master.values()), lr=1e-3)
    for _ in range(10):
        tensors.zero_grad()
        weight.grad = torch.ones_like(weight)
        tensors.gradients_to_master()
        optimizer.step()
        tensors.master_to_model()
    # Each step alone (1e-3) is below bfloat16's spacing at 1.0 (2^-7): stepping bf16 directly loses all ten.
    assert tensors.master["w"].dtype == torch.float32 and weight.dtype == torch.bfloat16
    assert tensors.master["w"][0].item() == pytest.approx(0.99, abs=1e-6)
    assert weight[0].item() == pytest.approx(0.99, abs=4e-3) and weight[0].item() < 1.0


def test_bfloat16_run_tracks_the_float32_run(workspace, single_process):
    single, _ = single_process
    half = unlearn(make_config(load_yaml(workspace / "run.yaml") | {"dtype": "bfloat16"}), progress=False)
    assert all(w.dtype == torch.bfloat16 for w in half.final_weights.values())
    for ours, reference in zip(half.records, single.records):
        assert ours["forget_loss"] == pytest.approx(reference["forget_loss"], rel=0.05)
        assert ours["retain_loss"] == pytest.approx(reference["retain_loss"], rel=0.2, abs=1e-3)


def test_fsdp_in_one_process_is_refused(workspace):
    with pytest.raises(UnlearnError, match="--fsdp shards the updated layers across processes"):
        unlearn(make_config(load_yaml(workspace / "run.yaml") | {"fsdp": True}), progress=False)
