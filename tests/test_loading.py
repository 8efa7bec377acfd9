"""Partial loading (layers 0..l only) and patch-saving of checkpoints, on tiny offline models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import rmu.loading as loading
from rmu.loading import CheckpointError, OmittedLMHead, load_model, resolve_checkpoint, save_patched
from rmu.structure import find_structure
from rmu.testing import save_tiny_model, tiny_config, tiny_tokenizer

TEXT = "Paris is the capital of France. The quick brown fox"
SHARD_SIZE = "150KB"  # a tiny llama (about 1 MB) then spans several shards


def layer_output(model, layer: int, input_ids: torch.Tensor) -> torch.Tensor:
    """The hidden state decoder layer ``layer`` outputs, read with a forward hook."""
    captured = {}

    def hook(module, inputs, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output

    handle = find_structure(model).layers[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    finally:
        handle.remove()
    return captured["h"]


def save_sharded(path: Path, architecture: str = "llama", tied: bool = False) -> Path:
    """A tiny checkpoint written in several shards (optionally with tied embeddings)."""
    tokenizer = tiny_tokenizer()
    config = tiny_config(architecture, vocab_size=len(tokenizer), num_layers=4)
    config.tie_word_embeddings = tied
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path, max_shard_size=SHARD_SIZE)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    path = save_sharded(tmp_path_factory.mktemp("sharded"))
    assert (path / loading.INDEX_FILE).is_file()
    assert len(set(json.loads((path / loading.INDEX_FILE).read_text())["weight_map"].values())) >= 3
    return path


@pytest.fixture(scope="module")
def single_file(tmp_path_factory) -> Path:
    path = save_tiny_model(tmp_path_factory.mktemp("single"), "llama", num_layers=4)
    assert (path / loading.SINGLE_FILE).is_file()
    return path


# (a) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "gemma3_text", "gpt_neox", "phi"])
@pytest.mark.parametrize("layer", [0, 2])
def test_truncated_load_gives_identical_layer_output(tmp_path, architecture, layer):
    path = save_tiny_model(tmp_path, architecture, num_layers=4)
    full, tokenizer = load_model(path)
    truncated, _ = load_model(path, upto_layer=layer)
    input_ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert torch.equal(layer_output(full, layer, input_ids), layer_output(truncated, layer, input_ids))
    assert len(find_structure(truncated).layers) == layer + 1
    assert isinstance(truncated.get_output_embeddings(), OmittedLMHead)


def test_truncated_load_with_tied_embeddings(tmp_path):
    path = save_sharded(tmp_path, tied=True)
    full, tokenizer = load_model(path)
    truncated, _ = load_model(path, upto_layer=1)
    input_ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert torch.equal(layer_output(full, 1, input_ids), layer_output(truncated, 1, input_ids))
    embeddings = truncated.get_input_embeddings().weight
    assert torch.equal(embeddings, full.get_input_embeddings().weight)


def test_truncated_model_still_runs_its_forward(single_file):
    model, tokenizer = load_model(single_file, upto_layer=1)
    output = model(**tokenizer([TEXT], return_tensors="pt"), use_cache=False)
    assert output.logits.shape[-1] == 0  # no LM head: it is not a language model
    assert tokenizer.pad_token is not None


def test_truncated_load_casts_to_the_requested_dtype(single_file):
    model, _ = load_model(single_file, upto_layer=1, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_truncated_load_trains(single_file):
    """Gradients flow into the loaded layers (the engine trains them)."""
    model, tokenizer = load_model(single_file, upto_layer=2)
    weight = find_structure(model).layers[2].mlp.down_proj.weight
    captured = {}
    hook = find_structure(model).layers[2].register_forward_hook(
        lambda module, inputs, output: captured.setdefault("h", output[0] if isinstance(output, tuple) else output)
    )
    model(**tokenizer([TEXT], return_tensors="pt"), use_cache=False)
    hook.remove()
    captured["h"].pow(2).mean().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


# (b) -----------------------------------------------------------------------------------------


class ReadRecorder:
    """Wraps safetensors.safe_open to record which shards are opened and which tensors read."""

    def __init__(self):
        self.shards: set[str] = set()
        self.tensors: list[str] = []

    def __call__(self, path, *args, **kwargs):
        recorder = self
        handle = safe_open(path, *args, **kwargs)
        self.shards.add(Path(path).name)

        class Recording:
            def __enter__(self):
                handle.__enter__()
                return self

            def __exit__(self, *exc):
                return handle.__exit__(*exc)

            def keys(self):
                return handle.keys()

            def metadata(self):
                return handle.metadata()

            def get_tensor(self, key):
                recorder.tensors.append(key)
                return handle.get_tensor(key)

        return Recording()


def test_sharded_partial_load_reads_only_needed_tensors(sharded, monkeypatch):
    recorder = ReadRecorder()
    monkeypatch.setattr(loading, "safe_open", recorder)
    layer = 1
    model, _ = load_model(sharded, upto_layer=layer)

    structure = find_structure(model)
    assert len(structure.layers) == layer + 1
    names = {name for name, _ in model.named_parameters()}
    assert not any(name.startswith(structure.layer_prefix(i)) for i in range(layer + 1, 4) for name in names)
    assert all(not p.is_meta for p in model.parameters())

    weight_map = json.loads((sharded / loading.INDEX_FILE).read_text())["weight_map"]
    assert sorted(recorder.tensors) == sorted(names)  # each needed tensor read once, nothing else
    assert not any("lm_head" in key or ".layers.2." in key or ".layers.3." in key for key in recorder.tensors)
    assert recorder.shards == {weight_map[name] for name in names}
    assert len(recorder.shards) < len(set(weight_map.values()))  # some shards never opened

    full, _ = load_model(sharded)
    dropped = {name for name, _ in full.named_parameters()} - names
    assert dropped == {name for name in weight_map if name.startswith(("lm_head", "model.layers.2.", "model.layers.3."))}
    full_state = full.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, full_state[name]), name


def test_checkpoint_key_accepts_base_model_names():
    keys = {"h.0.mlp.c_proj.weight", "model.layers.0.mlp.down_proj.weight"}
    assert loading._checkpoint_key("transformer.h.0.mlp.c_proj.weight", keys) == "h.0.mlp.c_proj.weight"
    assert loading._checkpoint_key("layers.0.mlp.down_proj.weight", keys) == "model.layers.0.mlp.down_proj.weight"
    assert loading._checkpoint_key("model.layers.9.mlp.down_proj.weight", keys) is None


# (c) -----------------------------------------------------------------------------------------


def changed_weights(source: Path) -> dict[str, torch.Tensor]:
    """New values for the MLP output projections of layers 1 and 2, as the engine would give."""
    model, _ = load_model(source, upto_layer=2)
    structure = find_structure(model)
    generator = torch.Generator().manual_seed(7)
    changed = {}
    for index in (1, 2):
        name = structure.layer_prefix(index) + "mlp.down_proj.weight"
        weight = model.get_parameter(name)
        changed[name] = weight.detach() + torch.randn(weight.shape, generator=generator)
    return changed


def reference_save(source: Path, target: Path, changed: dict[str, torch.Tensor]) -> None:
    """The slow path: full load, update the tensors, save_pretrained."""
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        for name, value in changed.items():
            model.get_parameter(name).copy_(value)
    model.save_pretrained(target, max_shard_size=SHARD_SIZE)


def checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint by name, following its index; checks the index is valid."""
    weight_map = loading.checkpoint_weight_map(folder)
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        with safe_open(folder / shard, framework="pt") as handle:
            assert handle.metadata().get("format") == "pt"
            for key in handle.keys():
                assert weight_map[key] == shard
                tensors[key] = handle.get_tensor(key)
    assert set(tensors) == set(weight_map)
    return tensors


@pytest.mark.parametrize("kind", ["sharded", "single_file"])
def test_save_patched_equals_full_load_update_save(kind, request, tmp_path):
    source = request.getfixturevalue(kind)
    changed = changed_weights(source)
    patched = save_patched(source, tmp_path / "patched", changed)
    reference_save(source, tmp_path / "reference", changed)

    patched_tensors = checkpoint_tensors(patched)
    reference_tensors = checkpoint_tensors(tmp_path / "reference")
    assert patched_tensors.keys() == reference_tensors.keys()
    for name, tensor in reference_tensors.items():
        assert torch.equal(patched_tensors[name], tensor), name

    reloaded = AutoModelForCausalLM.from_pretrained(patched).state_dict()
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "reference").state_dict()
    assert reloaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(reloaded[name], tensor), name
    for name, value in changed.items():
        assert torch.equal(reloaded[name], value)

    source_files = {p.name for p in source.iterdir()}
    assert source_files <= {p.name for p in patched.iterdir()}  # config, tokenizer, shards, index
    load_model(patched)  # tokenizer and model load from the result


def test_save_patched_rewrites_only_shards_with_changes(sharded, tmp_path):
    changed = changed_weights(sharded)
    weight_map = loading.checkpoint_weight_map(sharded)
    touched = {weight_map[name] for name in changed}
    patched = save_patched(sharded, tmp_path / "patched", changed, hardlink=True)
    for shard in set(weight_map.values()):
        same_file = (patched / shard).stat().st_ino == (sharded / shard).stat().st_ino
        assert same_file == (shard not in touched), shard
        if shard not in touched:
            assert (patched / shard).read_bytes() == (sharded / shard).read_bytes()
    assert (patched / loading.INDEX_FILE).read_bytes() == (sharded / loading.INDEX_FILE).read_bytes()


def test_save_patched_keeps_the_checkpoint_dtype(tmp_path):
    source = tmp_path / "bf16"
    model, _ = load_model(save_tiny_model(tmp_path / "f32", "llama", num_layers=2))
    model.to(torch.bfloat16).save_pretrained(source)
    name = find_structure(model).layer_prefix(1) + "mlp.down_proj.weight"
    new_value = torch.ones(model.get_parameter(name).shape, dtype=torch.float32) / 3
    save_patched(source, tmp_path / "out", {name: new_value})
    with safe_open(tmp_path / "out" / loading.SINGLE_FILE, framework="pt") as handle:
        stored = handle.get_tensor(name)
    assert stored.dtype == torch.bfloat16
    assert torch.equal(stored, new_value.to(torch.bfloat16))


# (d) -----------------------------------------------------------------------------------------


def test_save_patched_rejects_unknown_names(single_file, tmp_path):
    with pytest.raises(CheckpointError, match="model.layers.99.mlp.down_proj.weight"):
        save_patched(single_file, tmp_path / "out", {"model.layers.99.mlp.down_proj.weight": torch.zeros(1)})


def test_save_patched_rejects_wrong_shapes(single_file, tmp_path):
    with pytest.raises(CheckpointError, match="shape"):
        save_patched(single_file, tmp_path / "out", {"model.layers.0.mlp.down_proj.weight": torch.zeros(3)})


def test_save_patched_refuses_to_overwrite_its_source(single_file):
    with pytest.raises(CheckpointError, match="differ"):
        save_patched(single_file, single_file, {})


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(CheckpointError, match="not found"):
        load_model(missing, upto_layer=0)
    with pytest.raises(CheckpointError, match="not found"):
        save_patched(missing, tmp_path / "out", {})


def test_offline_hub_id_names_the_id_and_suggests_a_folder(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="rmu-test/not-a-real-model.*local checkpoint folder"):
        resolve_checkpoint("rmu-test/not-a-real-model")


def test_folder_without_safetensors_is_a_clear_error(single_file, tmp_path):
    for path in single_file.iterdir():
        if path.suffix != ".safetensors":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(tmp_path, upto_layer=0)


def test_layer_out_of_range(single_file):
    with pytest.raises(ValueError, match="between 0 and 3"):
        load_model(single_file, upto_layer=4)
