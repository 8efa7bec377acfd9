"""Running one unlearning job across processes, with PyTorch's own distributed stack.

Launch with ``torchrun --nproc_per_node N -m rmu unlearn ...`` or let ``rmu unlearn --nproc N``
start ``torch.distributed.run`` for you. Each process (rank) reads torchrun's environment, joins a
process group (gloo on CPU, NCCL on CUDA) and works on its own device (``cuda:LOCAL_RANK``).

Data parallel (the default when there are several ranks):

* every rank tokenises the whole batch (so padding is the same as in one process) and computes
  only its share of the rows (:meth:`Ranks.share`; as even as possible, a rank may get one row
  more);
* the updated layers (first updated .. l) are wrapped in ``DistributedDataParallel``. Each rank's
  loss is weighted by its part of the full-batch loss denominator (rows, or real tokens with
  ``mask_padding``), so DDP's gradient average is exactly the full-batch gradient even when the rows
  do not split evenly. The first of the two backward passes runs under ``no_sync()``;
* logged losses and norms are full-batch values (``all_reduce``); coefficients and noise are
  computed as in one process (the noise for the whole batch is drawn on every rank from the same
  generator, then sliced);
* rank 0 alone writes outputs (checkpoint, run.json, resume state); the others wait at a barrier.

``--fsdp`` shards with FSDP2 (``torch.distributed.fsdp.fully_shard``) instead, for models whose
layers 0..l do not fit one device. Every decoder layer 0..l is sharded on the meta device before
anything is read, and each rank then reads only its own rows of each tensor from the safetensors
files (:func:`rmu.loading.load_sharded`): no rank ever holds a whole layer outside the forward pass, and peak
memory per rank is about 1/N of layers 0..l plus the embeddings (replicated). The frozen pass
cannot swap the original weights in by name (FSDP replaces the parameters it all-gathers), so a
frozen copy of the updated layers, sharded and read the same way, runs in their place. With
``--full-load`` the whole model is loaded on every rank and only the updated layers are sharded.
FSDP2 runs on CPU with gloo (torch 2.13 checked); there, set ``MALLOC_MMAP_THRESHOLD_=1048576``:
otherwise glibc keeps the memory of every freed all-gathered layer in the process
(``benchmarks/bench_fsdp_load.py``). Resumable state (``--save-every``) is not supported with
``--fsdp``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from rmu.config import resolve_device
from rmu.runner import LayerRunner, UpdatedLayers  # noqa: F401  (UpdatedLayers: also rmu.distributed's name)


@dataclass(frozen=True)
class RowShare:
    """The rows of a batch one rank computes, and its part of the full-batch loss."""

    rows: slice  # one borrowed row when the rank has none, so it still joins the collectives
    count: int  # real rows of this rank (0 when the row is borrowed)
    weight: float  # this rank's part of the full-batch loss denominator


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job; one rank of one when not distributed."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, rows: int, mask: torch.Tensor | None) -> RowShare:
        """This rank's rows of a ``rows``-row batch; ``mask`` when the loss counts real tokens only."""
        base, extra = divmod(rows, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        count = base + (1 if self.rank < extra else 0)
        if count == 0:
            return RowShare(slice(0, 1), 0, 0.0)
        if mask is None:
            weight = count / rows
        else:
            weight = float(mask[start : start + count].sum() / mask.sum())
        return RowShare(slice(start, start + count), count, weight)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (the value itself in one process)."""
        if not self.distributed:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _device_for_rank(device_option: str, local_rank: int) -> torch.device:
    device = resolve_device(device_option)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


@contextlib.contextmanager
def session(device_option: str) -> Iterator[Ranks]:
    """Join torchrun's process group when launched by it (and leave it after, if we joined)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield Ranks(0, 1, _device_for_rank(device_option, 0))
        return
    device = _device_for_rank(device_option, int(os.environ.get("LOCAL_RANK", "0")))
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size(), device)
    finally:
        if created:
            dist.destroy_process_group()


def distribute(runner: LayerRunner, ranks: Ranks, fsdp: bool, frozen_copy: list[nn.Module] | None = None) -> None:
    """Wrap the runner's updated layers for data-parallel (DDP) or sharded (FSDP2) training.

    ``frozen_copy``: sharded frozen layers that :func:`rmu.loading.load_sharded` already built.
    """
    if fsdp:
        runner.updated_module, runner.frozen_copy = shard_updated_layers(runner.stack, ranks, frozen_copy)
    elif ranks.distributed:
        runner.updated_module = wrap_data_parallel(runner.stack, ranks)


def wrap_data_parallel(stack: UpdatedLayers, ranks: Ranks) -> nn.Module:
    """DDP over the updated layers (their trained tensors are the only ones needing gradients)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return DistributedDataParallel(stack, device_ids=device_ids)


_MESHES: dict = {}


def device_mesh(ranks: Ranks):
    """One 1-D mesh of all ranks, shared by every module FSDP2 shards (nested modules need the same)."""
    from torch.distributed.device_mesh import init_device_mesh

    key = (ranks.device.type, ranks.world_size)
    if key not in _MESHES:
        _MESHES[key] = init_device_mesh(ranks.device.type, (ranks.world_size,))
    return _MESHES[key]


# Each sharded layer is explicitly resharded after its forward pass: a layer that is its own FSDP
# root (the frozen layers are never wrapped in a parent) otherwise keeps its gathered weights.


def shard_updated_layers(stack: UpdatedLayers, ranks: Ranks,
                         frozen_copy: list[nn.Module] | None = None) -> tuple[nn.Module, list[nn.Module]]:
    """FSDP2 over the updated layers (in place), plus a sharded frozen copy of them for the frozen pass.

    ``frozen_copy`` given: the layers and the copy were sharded as they were loaded
    (:func:`rmu.loading.load_sharded`).
    """
    from torch.distributed.fsdp import fully_shard

    mesh = device_mesh(ranks)
    if frozen_copy is None:
        frozen_copy = [copy.deepcopy(layer).requires_grad_(False) for layer in stack.layers]
        for layer in [*frozen_copy, *stack.layers]:
            fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    fully_shard(stack, mesh=mesh)
    return stack, frozen_copy


def load_sharded(source, upto_layer: int, first_updated: int, ranks: Ranks, dtype: torch.dtype,
                 trust_remote_code: bool = False):
    """:func:`rmu.loading.load_sharded` over this job's mesh of ranks (the loading itself lives there)."""
    from rmu import loading

    return loading.load_sharded(source, upto_layer, first_updated, device_mesh(ranks), ranks.device, dtype,
                                trust_remote_code)


@contextlib.contextmanager
def without_gradient_sync(module: nn.Module) -> Iterator[None]:
    """Accumulate this backward pass's gradients locally; the next synchronised pass averages both."""
    if hasattr(module, "no_sync"):  # DDP
        with module.no_sync():
            yield
    elif hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        yield


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor of the whole value (gathers an FSDP shard; a collective under FSDP)."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def launch(nproc: int, rmu_arguments: list[str]) -> int:
    """Run ``rmu <rmu_arguments>`` in ``nproc`` processes with torch.distributed.run; its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "rmu", *rmu_arguments]
    return subprocess.call(command)
