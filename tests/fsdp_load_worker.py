"""Run by torchrun from test_distributed: load a checkpoint sharded and report what this rank holds."""

import json
import sys

import torch
from safetensors.torch import load_file

from rmu.distributed import load_sharded, session
from rmu.loading import shard_rows
from rmu.structure import find_structure

folder, output, layer, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with session("cpu") as ranks:
    model, _, frozen_copy = load_sharded(folder, layer, first, ranks, torch.float32)
    checkpoint = load_file(f"{folder}/model.safetensors")
    layers = find_structure(model).layers
    report = {"layers": len(layers), "copies": len(frozen_copy), "wrong": [], "sharded": 0, "held": 0, "whole": 0}

    def check(name, parameter):
        expected = checkpoint[name]
        if hasattr(parameter, "to_local"):
            local = parameter.to_local()
            report["sharded"] += expected.numel()  # the whole tensor
            expected = expected[shard_rows(expected.shape[0], ranks.rank, ranks.world_size)]
            report["held"] += local.numel()
        else:
            local = parameter
            report["whole"] += 1
        if not torch.equal(local, expected):
            report["wrong"].append(name)

    for name, parameter in model.named_parameters():
        check(name, parameter)
        if name.startswith("model.layers.") and not hasattr(parameter, "to_local"):
            report["wrong"].append(f"{name} is not sharded")
    for offset, copy in enumerate(frozen_copy):
        for name, parameter in copy.named_parameters():
            check(f"model.layers.{first + offset}.{name}", parameter)
            if parameter.requires_grad:
                report["wrong"].append(f"copy {offset} {name} requires grad")
    with open(f"{output}/rank{ranks.rank}.json", "w") as handle:
        json.dump(report, handle)
