"""Checks of an unlearning run against the model's files, before any weight is read.

They use config.json, the safetensors headers and the model built on the meta device (no memory),
so that a run that cannot work fails in a second with a message naming the option, not after
minutes of loading or in step 0: the checkpoint is complete and not pickle, the steered layer
exists, the truncation lengths fit the model's positions, ``--params`` selects weights, and saved
control vectors fit the model.
"""

from __future__ import annotations

from pathlib import Path

from rmu.config import ConfigError, UnlearnConfig, resolve_device
from rmu.loading import (CheckpointError, check_checkpoint_files, empty_model, remote_code_refusal,
                         resolve_checkpoint)
from rmu.structure import check_layer, find_structure, select_parameters

# Config keys that state how many positions a model has (GPT-2 names it n_positions).
POSITION_LIMIT_KEYS = ("max_position_embeddings", "n_positions")


def check_run(config: UnlearnConfig) -> None:
    """Raise a ConfigError / CheckpointError / StructureError naming the option when ``config`` cannot run."""
    model = check_model(config.model, config.trust_remote_code)
    structure = find_structure(model)
    check_layer(config.layer, structure.num_layers, option="--layer", error=ConfigError)
    check_lengths(config, model.config)
    select_parameters(model, structure, config.update_layers, config.params)  # names the presets if none match
    if config.control_vectors:
        from rmu.rules import check_control_vectors

        check_control_vectors(Path(config.control_vectors), config.topics, structure.hidden_size)


def check_model(source, trust_remote_code: bool = False):
    """The model ``source`` describes, on the meta device, once its files and config are known good.

    Raises a CheckpointError for a missing or incomplete folder, pickle weights, model code shipped
    without ``trust_remote_code``, or a config.json that builds no model.
    """
    folder = resolve_checkpoint(source)
    check_checkpoint_files(folder)
    return _empty_model(folder, trust_remote_code)


def load_whole_model(source, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
    """The whole model (its LM head too: evaluation needs it) and its tokenizer, in eval mode, its files
    checked first (:func:`check_model`: a bad folder fails before any weight is read).

    ``dtype``: float32, bfloat16, float16 or auto (the checkpoint's own); ``device``: cpu, cuda, ... or
    auto (cuda when there is one). Raises a CheckpointError naming the model.
    """
    import torch

    from rmu import loading  # through the module: tests replace loading.load_model to catch any weight load

    try:
        check_model(source, trust_remote_code)
        model, tokenizer = loading.load_model(source, upto_layer=None,
                                              dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                                              device=resolve_device(device), trust_remote_code=trust_remote_code)
    except (CheckpointError, OSError, ValueError) as error:
        raise CheckpointError(f"could not load model {source!s}: {error}") from None
    return model.eval(), tokenizer


def _empty_model(folder: Path, trust_remote_code: bool):
    try:
        import torch

        return empty_model(folder, torch.float32, trust_remote_code)
    except (OSError, ValueError, KeyError) as error:  # unreadable config.json, unknown model type, remote code
        if refusal := remote_code_refusal(folder, error):
            raise refusal from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{folder / 'config.json'}: cannot build the model it describes ({reason})") from None


def position_limit(model_config) -> int | None:
    """The number of positions the model's config states, if it states one."""
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    for key in POSITION_LIMIT_KEYS:
        value = getattr(text_config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_lengths(config: UnlearnConfig, model_config) -> None:
    """--max-len and --retain-max-len within the model's positions (beyond them, step 0 fails)."""
    limit = position_limit(model_config)
    if limit is None:
        return
    for name, values in (("max-len", config.max_len), ("retain-max-len", [config.retain_max_len])):
        too_long = [value for value in values if value > limit]
        if too_long:
            raise ConfigError(f"--{name} {too_long[0]} exceeds the model's position limit of {limit} tokens "
                              f"(config.json); give at most {limit}")
