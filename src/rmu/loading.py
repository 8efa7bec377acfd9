"""Load only the part of a checkpoint that RMU needs, and save a patched checkpoint cheaply.

RMU reads the hidden state that decoder layer ``l`` outputs and trains a few weights at or below
``l``. Everything above ``l`` (later layers, the LM head) is dead weight, so
``load_model(source, upto_layer=l)`` builds the model on the meta device, drops the decoder layers
above ``l`` and materialises only the tensors left, read one by one from the safetensors shards.
Peak memory then grows with ``l``, not with the depth of the model.

The truncated model is an ordinary ``nn.Module`` of the same class as the full one:

* embeddings, decoder layers ``0..l`` and the final norm hold the checkpoint's values;
* the decoder ``ModuleList`` holds ``l + 1`` layers (the config still describes the full model);
* the LM head is replaced by :class:`OmittedLMHead`, which has no weights and returns zero-width
  logits. Tied embeddings stay intact: the input embedding matrix is loaded once.

It is good for reading and training layer ``l``'s output (read it with a forward hook on
``find_structure(model).layers[l]``, which is what the engine does; the last entry of
``output_hidden_states`` may carry the final norm on some architectures). It is not a language
model: no logits, no loss, no ``generate``. Save the result with :func:`save_patched`, which
writes a complete checkpoint from the source files plus the changed tensors.

Under ``rmu unlearn --fsdp``, :func:`load_sharded` builds the same truncated model with its decoder
layers sharded across processes (FSDP2) before anything is read, and each process reads only its
own rows of each tensor.

Only safetensors checkpoints are read (never pickle). A checkpoint that cannot be found, read or
patched raises :class:`CheckpointError` (the run folder that ``rmu unlearn`` writes around a
checkpoint is :mod:`rmu.run_folder`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rmu.errors import RmuError
from rmu.structure import find_structure

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# What a hub id looks like: "name" or "owner/name". Anything else is taken as a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# Weight files that hold pickle, which can run code when read: refused, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Files worth fetching from the hub: configs, tokenizer files, safetensors shards, remote code.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken", "*.jinja"]


class CheckpointError(RmuError, ValueError):
    """A checkpoint cannot be found, read or patched as asked."""


# ---------------------------------------------------------------------------------------------
# Finding the checkpoint and its tensors
# ---------------------------------------------------------------------------------------------


def resolve_checkpoint(source: str | os.PathLike) -> Path:
    """The local folder holding ``source``: a folder as is, otherwise a hub id downloaded once."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    looks_local = text.startswith(("/", ".", "~")) or text.count("/") > 1
    if looks_local or not _HUB_ID.match(text):
        raise CheckpointError(f"checkpoint folder not found: {text}")
    return _download_from_hub(text)


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as error:  # offline, unknown id, gated repo: all end the same way for the user
        raise CheckpointError(
            f"could not get '{repo_id}' from the Hugging Face hub ({type(error).__name__}: {error}). "
            "If you are offline or the id is wrong, pass the path of a local checkpoint folder instead."
        ) from error


def check_checkpoint_files(folder: Path) -> None:
    """Refuse, before anything is read, a folder that is not a complete safetensors checkpoint.

    Names what is missing (config, weights, shards, tokenizer); pickle weights are refused, not opened.
    """
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not (folder / INDEX_FILE).is_file() and not (folder / SINGLE_FILE).is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"refused: pickle checkpoint ({', '.join(pickles)} in {folder}); reading pickle can run code, so "
                "rmu reads safetensors only: convert to safetensors (save_pretrained in a trusted environment)"
            )
        missing.append(f"{SINGLE_FILE} (or {INDEX_FILE} and its shards)")
    else:
        shards = sorted(set(checkpoint_weight_map(folder).values()))
        missing += [shard for shard in shards if not (folder / shard).is_file()]
    if not any(_is_tokenizer_file(p.name) for p in folder.iterdir()):
        missing.append("the tokenizer (tokenizer.json, or tokenizer.model, or vocab.json and merges.txt)")
    if missing:
        raise CheckpointError(f"{folder} is not a complete checkpoint: missing {'; '.join(missing)}. "
                              "Point --model at a folder written by save_pretrained (weights in safetensors).")


def remote_code_refusal(source, error: Exception) -> CheckpointError | None:
    """The one-line refusal for transformers' "custom code" error, or None for any other error."""
    if "trust_remote_code" not in str(error) and "custom code" not in str(error):
        return None
    return CheckpointError(f"{source} ships its own model code, which rmu runs only with --trust-remote-code "
                           "(off by default: read that code first)")


def _is_tokenizer_file(name: str) -> bool:
    return name.startswith(("tokenizer", "vocab", "spiece", "merges")) or name.endswith((".model", ".tiktoken"))


def checkpoint_weight_map(folder: Path) -> dict[str, str]:
    """Tensor name -> shard file name, from the shard index or the single safetensors file."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return {str(name): str(shard) for name, shard in dict(weight_map).items()}
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index} is not a safetensors shard index ({type(error).__name__}: {error}); "
                                  "write the checkpoint again with save_pretrained") from None
    single = folder / SINGLE_FILE
    if single.is_file():
        try:
            with safe_open(single, framework="pt") as handle:
                return dict.fromkeys(handle.keys(), SINGLE_FILE)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{single} is not a readable safetensors file ({error}); "
                                  "write the checkpoint again with save_pretrained") from None
    raise CheckpointError(
        f"no {SINGLE_FILE} or {INDEX_FILE} in {folder}; rmu reads safetensors checkpoints only "
        "(convert .bin checkpoints with save_pretrained first)"
    )


def _checkpoint_key(name: str, keys) -> str | None:
    """The checkpoint key of model tensor ``name``.

    Usually the same name; checkpoints saved from the base model (GPT-2 on the hub: ``h.0...``
    for ``transformer.h.0...``) lack the first component, and the reverse happens too.
    """
    if name in keys:
        return name
    rest = name.partition(".")[2]
    if rest in keys:
        return rest
    for key in keys:
        if key.partition(".")[2] == name:
            return key
    return None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


class OmittedLMHead(nn.Module):
    """Stands in for the LM head of a truncated model: no weights, zero-width logits.

    Keeps the model's forward runnable (e.g. when a hook has already taken layer l's output)
    while making any use of the logits fail loudly instead of silently computing nonsense.
    """

    def __init__(self, vocab_size: int | None = None):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0)


def load_model(
    source: str | os.PathLike,
    *,
    upto_layer: int | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer)`` from a folder or hub id; ``upto_layer=l`` loads layers 0..l only.

    With ``upto_layer=None`` this is the plain ``AutoModelForCausalLM.from_pretrained`` (there
    ``dtype="auto"`` keeps the checkpoint's dtype). With
    ``upto_layer=l`` the model keeps decoder layers ``0..l`` and no LM head (see the module doc);
    only those tensors are read from the shards.
    """
    folder = resolve_checkpoint(source)
    check_checkpoint_files(folder)
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    if upto_layer is None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
        return model.to(device).eval(), tokenizer
    model = _load_truncated(folder, upto_layer, dtype, torch.device(device), trust_remote_code)
    return model, tokenizer


def load_tokenizer(folder: Path, *, trust_remote_code: bool = False):
    """The checkpoint's tokenizer; EOS doubles as the pad token when there is none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_truncated(folder: Path, upto_layer: int, dtype, device, trust_remote_code) -> nn.Module:
    model = truncated_skeleton(folder, upto_layer, dtype, trust_remote_code)
    return materialise(model, folder, dtype, device)


def truncated_skeleton(folder: Path, upto_layer: int, dtype, trust_remote_code: bool = False) -> nn.Module:
    """Layers 0..upto_layer and no LM head, every parameter still on the meta device (no memory).

    Fill it with :func:`materialise`; in between, modules may be sharded (FSDP2 on meta tensors,
    see :func:`load_sharded`) so that each process reads only its own rows.
    """
    model = empty_model(folder, dtype, trust_remote_code)
    _drop_layers_above(model, upto_layer)
    _omit_lm_head(model)
    model.rmu_truncated_at_layer = upto_layer
    return model


def materialise(model: nn.Module, folder: Path, dtype, device) -> nn.Module:
    """Give every meta tensor of a :func:`truncated_skeleton` its checkpoint value; returns the model."""
    _materialise_from_shards(model, folder, checkpoint_weight_map(folder), dtype, device)
    model.to(device)  # buffers were built on the CPU; parameters are already in place
    return model.eval()


def empty_model(folder: Path, dtype, trust_remote_code) -> nn.Module:
    """The full model with every parameter on the meta device (no memory) and real buffers.

    The full config is kept (not a reduced layer count) so that per-layer config lists such as
    Gemma 3's ``layer_types`` stay consistent; buffers (rotary tables, masks) are computed by
    the model's own constructor, exactly as in a full load.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)


def _drop_layers_above(model: nn.Module, upto_layer: int) -> None:
    layers = find_structure(model).layers
    if not 0 <= upto_layer < len(layers):
        raise CheckpointError(f"upto_layer must be between 0 and {len(layers) - 1}, got {upto_layer}")
    del layers[upto_layer + 1 :]


def _omit_lm_head(model: nn.Module) -> None:
    """Replace the output head (found through the model's own accessor) by OmittedLMHead."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        return  # nothing known to omit: the head is then loaded like any other module
    for name, module in model.named_modules():
        if module is head:
            parent_name, _, attribute = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attribute, OmittedLMHead(getattr(head, "out_features", None)))
            return


def _materialise_from_shards(model: nn.Module, folder: Path, weight_map, dtype, device) -> None:
    """Replace every meta tensor of ``model`` by its checkpoint value, one tensor at a time.

    safetensors maps the shard into memory, and the pages a tensor touches count as resident
    while the shard stays open; opening it per tensor releases them as soon as that tensor is
    converted, so the peak is the loaded part plus one tensor, not plus the whole shard.
    """
    keep_fp32 = _keep_in_fp32_patterns(model, dtype)
    planned, missing = [], []
    for names in _tensor_aliases(model).values():
        key = next((k for k in (_checkpoint_key(n, weight_map) for n in names) if k), None)
        if key is None:
            missing.append(names[0])
        else:
            planned.append((names, key))
    _fail_on_missing(model, missing)  # before reading anything: fail fast on a foreign layout
    for names, key in planned:
        tensor = _get_tensor(model, names[0])
        if _is_shard(tensor):  # sharded by FSDP2: read this process's rows only, in place
            fill_shard(tensor, folder / weight_map[key], key)
            continue
        with safe_open(folder / weight_map[key], framework="pt") as handle:
            value = handle.get_tensor(key)
        target_dtype = torch.float32 if any(p in names[0] for p in keep_fp32) else dtype
        if not value.is_floating_point():
            target_dtype = value.dtype  # integer buffers (position ids) keep their type
        _place(model, names, value.to(device=device, dtype=target_dtype))


def _tensor_aliases(model: nn.Module) -> dict[int, list[str]]:
    """Every parameter and persistent buffer, with all names it has (tied weights have several)."""
    aliases: dict[int, list[str]] = defaultdict(list)
    for name, tensor in model.named_parameters(remove_duplicate=False):
        aliases[id(tensor)].append(name)
    persistent = set(model.state_dict(keep_vars=True))
    for name, tensor in model.named_buffers(remove_duplicate=False):
        if name in persistent:
            aliases[id(tensor)].append(name)
    return aliases


def _fail_on_missing(model: nn.Module, missing: list[str]) -> None:
    # Real buffers absent from the checkpoint keep their computed value; meta tensors cannot.
    unloadable = [n for n in missing if _get_tensor(model, n).is_meta]
    if unloadable:
        shown = ", ".join(unloadable[:5]) + (" ..." if len(unloadable) > 5 else "")
        raise CheckpointError(
            f"the checkpoint has no tensor for {shown}; its names differ from the model's. "
            "Load it whole with upto_layer=None."
        )


def _keep_in_fp32_patterns(model: nn.Module, dtype) -> list[str]:
    """Modules transformers keeps in float32 at 16-bit precision (same rule as from_pretrained)."""
    patterns = []
    if dtype == torch.float16:
        patterns += list(getattr(model, "_keep_in_fp32_modules", None) or [])
    if dtype in (torch.float16, torch.bfloat16):
        patterns += list(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    return patterns


def _get_tensor(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, attribute = name.rpartition(".")
    return getattr(model.get_submodule(module_name) if module_name else model, attribute)


def _place(model: nn.Module, names: list[str], value: torch.Tensor) -> None:
    """Put ``value`` under every name of one tensor, so tied weights stay one shared tensor."""
    old = _get_tensor(model, names[0])
    if tuple(old.shape) != tuple(value.shape):
        raise CheckpointError(f"{names[0]}: checkpoint shape {tuple(value.shape)} != model {tuple(old.shape)}")
    new = nn.Parameter(value, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else value
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if isinstance(old, nn.Parameter):
            module._parameters[attribute] = new
        else:
            module._buffers[attribute] = new


# ---------------------------------------------------------------------------------------------
# Loading sharded across processes (FSDP2, ``rmu unlearn --fsdp``; see rmu.distributed)
# ---------------------------------------------------------------------------------------------


def load_sharded(source, upto_layer: int, first_updated: int, mesh, device: torch.device, dtype: torch.dtype,
                 trust_remote_code: bool = False):
    """``(model, tokenizer, frozen_copy)`` with decoder layers 0..upto_layer sharded across ``mesh``.

    The model is built on the meta device, each decoder layer (and a frozen copy of layers
    first_updated..upto_layer, for the frozen pass) is sharded by FSDP2 while still empty, and only
    then are the weights read: each rank its own rows (:func:`fill_shard`). The embeddings and the
    final norm are read whole on every rank. ``mesh``: :func:`rmu.distributed.device_mesh`, the one
    mesh every sharded module of the job shares.
    """
    from torch.distributed.fsdp import fully_shard

    folder = resolve_checkpoint(source)
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    model = truncated_skeleton(folder, upto_layer, dtype, trust_remote_code)
    layers = find_structure(model).layers
    layers_name = next(name for name, module in model.named_modules() if module is layers)
    frozen_copy = [copy.deepcopy(layers[i]).requires_grad_(False) for i in range(first_updated, upto_layer + 1)]
    for layer in [*layers, *frozen_copy]:
        _shard_empty(layer, mesh, device, fully_shard)
    materialise(model, folder, dtype, device)
    for offset, layer in enumerate(frozen_copy):
        fill_sharded_copy(layer, f"{layers_name}.{first_updated + offset}", folder)
    return model, tokenizer, frozen_copy


def _shard_empty(layer: nn.Module, mesh, device: torch.device, fully_shard) -> None:
    """Shard a layer whose parameters are on the meta device and give the shards (empty) storage."""
    buffers = {name: buffer for name, buffer in layer.named_buffers() if not buffer.is_meta}
    fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    layer.to_empty(device=device)  # allocates this rank's shard only; wipes buffers, restored below
    for name, buffer in buffers.items():
        module_name, _, attribute = name.rpartition(".")
        (layer.get_submodule(module_name) if module_name else layer)._buffers[attribute] = buffer.to(device)


def _is_shard(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def shard_rows(rows: int, rank: int, world_size: int) -> slice:
    """The rows of dimension 0 that FSDP2 gives ``rank`` (``torch.chunk``: ceil-sized, last ones short)."""
    size = -(-rows // world_size)
    return slice(min(rank * size, rows), min((rank + 1) * size, rows))


@torch.no_grad()
def fill_shard(parameter: torch.Tensor, shard_file: Path, key: str) -> None:
    """Copy this process's rows of checkpoint tensor ``key`` into an FSDP2 parameter shard.

    safetensors reads only the requested rows, so no process ever holds the whole tensor.
    """
    from torch.distributed.tensor import Shard

    placements = parameter.placements
    if len(placements) != 1 or placements[0] != Shard(0):
        raise CheckpointError(f"{key}: only FSDP2's default sharding on dimension 0 can be loaded, got {placements}")
    mesh = parameter.device_mesh
    rows = shard_rows(parameter.shape[0], mesh.get_local_rank(), mesh.size())
    local = parameter.to_local()
    with safe_open(shard_file, framework="pt") as handle:
        part = handle.get_slice(key)
        if tuple(part.get_shape()) != tuple(parameter.shape):
            raise CheckpointError(f"{key}: checkpoint shape {tuple(part.get_shape())} != model {tuple(parameter.shape)}")
        value = part[rows] if rows.stop > rows.start else torch.empty(0)
    if local.numel() != value.numel():
        raise CheckpointError(f"{key}: FSDP2 holds {tuple(local.shape)} on this rank, expected rows {rows}")
    local.copy_(value.reshape(local.shape).to(local.dtype))


def fill_sharded_copy(module: nn.Module, name_in_model: str, folder: Path) -> None:
    """Fill the FSDP2-sharded parameters of ``module``, a copy of the model's submodule ``name_in_model``."""
    weight_map = checkpoint_weight_map(folder)
    for name, parameter in module.named_parameters():
        key = _checkpoint_key(f"{name_in_model}.{name}", weight_map)
        if key is None:
            raise CheckpointError(f"the checkpoint has no tensor for {name_in_model}.{name}")
        fill_shard(parameter, folder / weight_map[key], key)



# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------


def save_patched(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    changed: dict[str, torch.Tensor],
    *,
    hardlink: bool = False,
) -> Path:
    """Write ``source`` with the ``changed`` tensors replaced to ``output_dir``; returns it.

    Nothing but the shards holding changed tensors is loaded, one shard at a time. Every other
    file (config, tokenizer, untouched shards, the index) is copied as is, so the index stays
    valid: names, shapes and dtypes do not change (changed tensors are cast to the checkpoint's
    dtype). ``hardlink=True`` links untouched files instead of copying them; use it only when
    the source files will not be modified in place afterwards (a link shares the file).
    ``changed`` keys are model parameter names (``model.named_parameters()``).
    """
    folder = resolve_checkpoint(source)
    output = Path(output_dir)
    if output.resolve() == folder.resolve() or folder.resolve() in output.resolve().parents:
        raise CheckpointError("output_dir must differ from the source checkpoint folder and lie outside it")
    weight_map = checkpoint_weight_map(folder)
    by_shard = _changed_by_shard(changed, weight_map)
    output.mkdir(parents=True, exist_ok=True)
    _copy_untouched(folder, output, skip=set(by_shard), hardlink=hardlink)
    for shard, replacements in by_shard.items():
        _rewrite_shard(folder / shard, output / shard, replacements)
    return output


def _changed_by_shard(changed: dict[str, torch.Tensor], weight_map) -> dict[str, dict[str, torch.Tensor]]:
    by_shard: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    unknown = []
    for name, tensor in changed.items():
        key = _checkpoint_key(name, weight_map)
        if key is None:
            unknown.append(name)
        else:
            by_shard[weight_map[key]][key] = tensor
    if unknown:
        raise CheckpointError(
            f"not in the checkpoint: {', '.join(unknown)} (names must be those of "
            "model.named_parameters() for tensors that the checkpoint stores)"
        )
    return dict(by_shard)


def _copy_untouched(folder: Path, output: Path, skip: set[str], hardlink: bool) -> None:
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_dir() or relative.as_posix() in skip or relative.parts[0].startswith("."):
            continue  # hidden entries: hub cache metadata, editor files
        target = output / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()  # never write through an old hard link into someone else's file
        if hardlink and _try_link(path.resolve(), target):
            continue
        shutil.copyfile(path, target)  # follows hub symlinks to their blobs


def _try_link(path: Path, target: Path) -> bool:
    try:
        os.link(path, target)
        return True
    except OSError:  # other file system, no permission: copying is always fine
        return False


def _rewrite_shard(source_shard: Path, target_shard: Path, replacements: dict[str, torch.Tensor]) -> None:
    """Read one shard, swap the replaced tensors (in the shard's dtype), write it atomically."""
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(source_shard, framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        for key in handle.keys():
            tensors[key] = handle.get_tensor(key)
    for key, value in replacements.items():
        original = tensors[key]
        if tuple(value.shape) != tuple(original.shape):
            raise CheckpointError(f"{key}: new shape {tuple(value.shape)} != checkpoint {tuple(original.shape)}")
        tensors[key] = value.detach().to(device="cpu", dtype=original.dtype).contiguous()
    metadata.setdefault("format", "pt")
    handle, temporary = tempfile.mkstemp(dir=target_shard.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        if target_shard.exists():
            target_shard.unlink()
        os.replace(temporary, target_shard)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
