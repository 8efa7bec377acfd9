"""rmu.structure: decoder layers, hidden size and the MLP output projection, found by structure alone
on every tiny architecture of rmu.testing."""

from __future__ import annotations

import pytest
from torch import nn

from rmu.structure import StructureError, find_mlp, find_structure, layer_hidden, mlp_output_projection
from rmu.testing import TINY_ARCHITECTURES, tiny_model

# architecture -> (qualified name of the layer list, MLP output projection relative to a layer)
EXPECTED = {
    "llama": ("model.layers", "mlp.down_proj.weight"),
    "mistral": ("model.layers", "mlp.down_proj.weight"),
    "qwen2": ("model.layers", "mlp.down_proj.weight"),
    "gemma3_text": ("model.layers", "mlp.down_proj.weight"),
    "gpt2": ("transformer.h", "mlp.c_proj.weight"),
    "gpt_neox": ("gpt_neox.layers", "mlp.dense_4h_to_h.weight"),
    "phi": ("model.layers", "mlp.fc2.weight"),
}


def test_every_tiny_architecture_has_an_expectation():
    assert set(EXPECTED) == set(TINY_ARCHITECTURES)


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
def test_structure_of_each_tiny_architecture(architecture):
    model, _ = tiny_model(architecture, num_layers=3, hidden=32)
    layers_name, projection = EXPECTED[architecture]
    structure = find_structure(model)
    assert structure.layers_name == layers_name
    assert structure.num_layers == 3 and structure.layers is model.get_submodule(layers_name)
    assert structure.hidden_size == 32
    assert structure.layer_prefix(2) == f"{layers_name}.2."
    for index, layer in enumerate(structure.layers):
        name = mlp_output_projection(layer, structure.hidden_size)
        assert name == projection
        weight = model.get_parameter(structure.layer_prefix(index) + name)
        assert 32 in weight.shape and weight.numel() > 32 * 32  # writes the hidden size from a wider input
    assert find_mlp(structure.layers[0])[0] == "mlp"


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
        self.ffn = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.norm = nn.LayerNorm(8)


class _Toy(nn.Module):
    def __init__(self, blocks: int = 3):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.heads = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 4)])  # shorter list: not the layers
        self.blocks = nn.ModuleList([_Block() for _ in range(blocks)])

    def get_input_embeddings(self):
        return self.embed


def test_longest_uniform_list_is_the_layers_and_attention_is_not_the_mlp():
    structure = find_structure(_Toy())
    assert structure.layers_name == "blocks" and structure.num_layers == 3 and structure.hidden_size == 8
    # the attention child is larger than the MLP, and is skipped by its name
    assert find_mlp(structure.layers[0])[0] == "ffn"
    assert mlp_output_projection(structure.layers[0], 8) == "ffn.2.weight"


def test_a_model_without_layers_is_refused():
    with pytest.raises(StructureError, match="no list of identical decoder layers"):
        find_structure(nn.Sequential(nn.Linear(4, 4)))


def test_a_layer_without_an_mlp_is_refused():
    with pytest.raises(StructureError, match="no MLP found"):
        find_mlp(nn.Module())


def test_layer_hidden_takes_a_tensor_or_the_first_item():
    import torch

    hidden = torch.ones(1, 2, 3)
    assert layer_hidden(hidden) is hidden and layer_hidden((hidden, None)) is hidden
