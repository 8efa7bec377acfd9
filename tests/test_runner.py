"""rmu.runner: running a model partway (layer outputs, the engine's two passes, stopping after a layer)
and the context managers that put a model's mode and requires_grad flags back; rmu.structure.check_layer."""

from __future__ import annotations

import pytest
import torch

from rmu.data import tokenize
from rmu.runner import (LayerRunner, decoder_outputs, eval_mode, forward_until, layer_output, restored_mode,
                        trainable_only)
from rmu.structure import StructureError, check_layer, find_structure
from rmu.testing import tiny_model

TEXTS = ["Paris is the capital of France.", "Iron has the symbol Fe and oxygen is O, in short."]


def batch_of(tokenizer, texts=TEXTS):
    return tokenize(tokenizer, texts, 32)


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "gemma3_text"])
def test_layer_output_is_the_models_own_hidden_state_at_that_layer(architecture):
    model, tokenizer = tiny_model(architecture, num_layers=4)
    batch = batch_of(tokenizer)
    with torch.no_grad():
        states = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       output_hidden_states=True).hidden_states
    every = decoder_outputs(model, batch.input_ids, batch.attention_mask)
    assert len(every) == 4
    for layer in range(3):  # hidden_states[l + 1] is layer l's output, except for the last (final norm)
        assert torch.allclose(layer_output(model, layer, batch), states[layer + 1], atol=1e-5)
        assert torch.allclose(every[layer], states[layer + 1], atol=1e-5)
    assert torch.allclose(layer_output(model, 3, batch), every[3], atol=1e-5)


def test_forward_until_runs_nothing_above_the_layer_and_sees_earlier_hooks():
    model, tokenizer = tiny_model("llama", num_layers=4)
    layers, batch = find_structure(model).layers, batch_of(tokenizer)
    ran_above = []
    above = layers[2].register_forward_hook(lambda *args: ran_above.append(True))
    doubled = layers[1].register_forward_hook(lambda module, args, output: (output[0] * 2, *output[1:])
                                              if isinstance(output, tuple) else output * 2)
    try:
        output = forward_until(layers[1], lambda: model(input_ids=batch.input_ids,
                                                        attention_mask=batch.attention_mask))
    finally:
        above.remove()
        doubled.remove()
    assert ran_above == []
    assert torch.allclose(output, 2 * layer_output(model, 1, batch))
    assert not layers[1]._forward_hooks  # its own hook is gone too


def test_forward_until_says_when_the_forward_never_reached_the_layer():
    model, tokenizer = tiny_model("llama", num_layers=2)
    with pytest.raises(StructureError, match="never reached layer 1"):
        forward_until(find_structure(model).layers[1], lambda: None, "layer 1")


def test_frozen_pass_uses_the_original_weights_and_the_updated_pass_the_current_ones():
    model, tokenizer = tiny_model("llama", num_layers=4)
    structure, batch = find_structure(model), batch_of(tokenizer)
    name = "model.layers.1.mlp.down_proj.weight"
    weight = dict(model.named_parameters())[name]
    original = {name: weight.detach().clone()}
    before = layer_output(model, 2, batch)
    with torch.no_grad():
        weight.add_(0.5)
    after = layer_output(model, 2, batch)
    assert not torch.allclose(before, after)
    runner = LayerRunner(model, structure, 1, 2, original)
    frozen = runner.frozen(batch)
    assert len(frozen.calls) == 2  # layers 1 and 2
    assert torch.allclose(frozen.output, before, atol=1e-6)
    assert torch.allclose(runner.updated(frozen), after, atol=1e-5)


def test_the_frozen_pass_runs_in_eval_mode_and_leaves_each_modules_mode_as_it_was():
    model, tokenizer = tiny_model("llama", num_layers=3)
    structure = find_structure(model)
    runner = LayerRunner(model, structure, 1, 2, {})
    runner.stack.train()  # the updated layers train (the published scripts' updated_model.train())
    seen = []
    hook = structure.layers[2].register_forward_pre_hook(lambda module, args: seen.append(module.training))
    try:
        runner.frozen(batch_of(tokenizer))
    finally:
        hook.remove()
    assert seen == [False]
    assert all(m.training for m in runner.stack.modules()) and not model.training


def modes(model):
    return [m.training for m in model.modules()]


def test_eval_mode_and_restored_mode_put_every_modules_mode_back_even_after_an_error():
    model, _ = tiny_model("llama", num_layers=2)
    model.train()
    find_structure(model).layers[0].eval()  # a mixed state must come back as it was, module by module
    before = modes(model)
    with pytest.raises(KeyError):
        with eval_mode(model):
            assert not any(modes(model))
            raise KeyError("boom")
    assert modes(model) == before
    with pytest.raises(KeyError):
        with restored_mode(model):
            model.eval()
            raise KeyError("boom")
    assert modes(model) == before


def test_trainable_only_gives_gradients_to_the_trained_weights_and_restores_every_flag():
    model, _ = tiny_model("llama", num_layers=2)
    embeddings = model.get_input_embeddings().weight
    embeddings.requires_grad_(False)  # a flag the caller set: it must come back as it was
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    trained = {n: p for n, p in model.named_parameters() if n.startswith("model.layers.1.mlp.")}
    with pytest.raises(KeyError):
        with trainable_only(model, trained):
            assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trained)
            raise KeyError("boom")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    with trainable_only(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


def test_check_layer_names_the_option_and_the_valid_range():
    check_layer(3, 4)
    check_layer([0, 3], 4)
    with pytest.raises(StructureError, match=r"^layer 4 is outside the model: it has layers 0\.\.3$"):
        check_layer(4, 4)
    with pytest.raises(ValueError, match=r"^--layer 9 is outside the model: it has layers 0\.\.5$"):
        check_layer(9, 6, option="--layer", error=ValueError)
    with pytest.raises(StructureError, match=r"^layers \[-1, 7\] are outside the model: it has layers 0\.\.5$"):
        check_layer([-1, 2, 7], 6)
    model, tokenizer = tiny_model("llama", num_layers=2)
    with pytest.raises(StructureError, match="layer 2 is outside the model"):
        layer_output(model, 2, batch_of(tokenizer))


def test_names_that_moved_are_still_importable_from_their_old_places():
    import rmu.checkpoint
    import rmu.run_folder
    from rmu import distributed, loading, runner
    from rmu.analysis.common import decoder_outputs as old_decoder_outputs, layer_output as old_layer_output
    from rmu.engine import FrozenPass, LayerRunner as OldLayerRunner

    assert (OldLayerRunner, FrozenPass) == (runner.LayerRunner, runner.FrozenPass)
    assert (old_layer_output, old_decoder_outputs) == (runner.layer_output, runner.decoder_outputs)
    assert rmu.checkpoint.OutputPlan is rmu.run_folder.OutputPlan
    assert rmu.checkpoint.RUN_FILE == rmu.run_folder.RUN_FILE == "run.json"
    assert callable(distributed.load_sharded) and callable(loading.load_sharded)
    assert distributed.UpdatedLayers is runner.UpdatedLayers
