"""What determines a run's result, recorded so that ``--resume`` continues only the same run.

A fingerprint has two parts:

* ``options``: the resolved configuration, less the options that may change between an
  interrupted run and its resumption (:data:`RESUME_FREE`) and less the paths of the inputs, which
  are compared by content instead (so ``./data/x`` and ``data/x``, or a moved copy, are the same);
* ``inputs``: each input's identity. A corpus or control-vector file: the SHA-256 of its bytes. A
  model folder: the SHA-256 of every file up to 16 MiB (config, tokenizer, index) and, for larger
  files (the weights), their size, modification time and the SHA-256 of their first and last MiB
  (which hold the safetensors header), so that identifying a 14 GB model reads 2 MiB per file, not
  the whole model. A rewritten weights file gets a new modification time; a copied model folder
  does too, and counts as a change (start over with ``--overwrite``). A hub id or ``hf:`` dataset:
  its name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Options that may differ between an interrupted run and its resumption.
RESUME_FREE = {"resume", "overwrite", "save_every", "device", "gradient_checkpointing", "divergence_check"}
# Options naming input files: compared by content (inputs), not by their spelling.
PATH_OPTIONS = {"model", "forget", "retain", "control_vectors", "output"}
# Options added after run states were first saved: the value of each that behaves as rmu did before it.
OLDER_BEHAVIOUR = {"loss_dims": "all", "keyword_mask": False, "auto_lr": "sign-step",
                   "keyword_positions": ["before", "after", "inside"], "keyword_window": None,
                   "keyword_forget_focus": False, "keyword_retain_weight": 1.0}
# Options that act on --keyword-robust's sentences only: no part of a run without them.
KEYWORD_ONLY = ("keyword_mask", "keyword_positions", "keyword_window", "keyword_forget_focus",
                "keyword_retain_weight")
_WHOLE_FILE_LIMIT = 16 * 2**20
_EDGE = 2**20


def run_fingerprint(config) -> dict:
    options = {k: v for k, v in config.model_dump().items() if k not in RESUME_FREE | PATH_OPTIONS}
    options["topics"] = config.topics
    if not config.keyword_robust:
        for key in KEYWORD_ONLY:
            options.pop(key, None)
    if "lr" not in config.auto:  # --auto-lr chooses how --auto lr calibrates; nothing without it
        options.pop("auto_lr", None)
    roles = input_roles(config.model, config.forget, config.retain, config.control_vectors)
    inputs = {f"model {config.model}": model_identity(config.model)}
    inputs.update({f"{role} ({source})": source_identity(source) for role, source in roles.items() if role != "model"})
    return {"options": options, "inputs": inputs}


def input_roles(model: str, forget: dict[str, str], retain, control_vectors: str | None = None,
                number_every_retain: bool = False) -> dict[str, str]:
    """Each input file of a run by its role ("model", "forget corpus 'x'", "retain corpus 2", ...).

    One retain corpus is "retain corpus" unless ``number_every_retain`` (as ``rmu tune`` studies record it).
    """
    roles = {"model": model}
    roles.update({f"forget corpus '{topic}'": source for topic, source in forget.items()})
    retain = list(retain or ())
    for index, source in enumerate(retain):
        roles["retain corpus" if len(retain) == 1 and not number_every_retain else f"retain corpus {index + 1}"] = source
    if control_vectors:
        roles["control vectors"] = control_vectors
    return roles


def differences(saved: dict | None, current: dict) -> list[str]:
    """What changed from ``saved`` to ``current``, one phrase per option or input."""
    if not saved:
        return ["the saved state has no fingerprint (written by an older rmu)"]
    changed = []
    old, new = saved.get("options", {}), without_new_defaults(saved.get("options", {}), current["options"])
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            changed.append(f"--{key.replace('_', '-')} was {old.get(key)!r}, now {new.get(key)!r}")
    # Inputs are matched by role (the label less its path), so a respelled path is the same input.
    old_inputs = {_role(k): v for k, v in saved.get("inputs", {}).items()}
    for label, identity in current["inputs"].items():
        before = old_inputs.get(_role(label))
        if before is None:
            changed.append(f"{label} is new")
        elif before != identity:
            changed.append(f"{label} changed: {_what_changed(before, identity)}")
    return changed


def without_new_defaults(saved: dict, current: dict) -> dict:
    """``current`` less the options an older rmu did not record and that are set as it behaved.

    An option added in a later version (:data:`OLDER_BEHAVIOUR`), set to the value that reproduces the
    older behaviour, is the same run, so a run (or ``rmu tune`` study) fingerprinted before the option
    existed continues; any other value is a difference.
    """
    return {k: v for k, v in current.items() if k in saved or k not in OLDER_BEHAVIOUR or v != OLDER_BEHAVIOUR[k]}


def _role(label: str) -> str:
    return label.split(" (")[0] if not label.startswith("model ") else "model"


def _what_changed(before: dict, now: dict) -> str:
    if before.get("files") and now.get("files"):
        files = sorted(name for name in set(before["files"]) | set(now["files"])
                       if before["files"].get(name) != now["files"].get(name))
        return "files " + ", ".join(files) + " differ"
    return "its contents differ"


def source_identity(source: str) -> dict:
    path = Path(source).expanduser()
    if path.is_file():
        return {"sha256": _hash_file(path)}
    if path.is_dir():
        return model_identity(source)
    return {"name": str(source)}


def model_identity(source: str) -> dict:
    folder = Path(source).expanduser()
    if folder.is_file():
        return {"files": {folder.name: _file_identity(folder)}}
    if not folder.is_dir():
        return {"name": str(source)}  # a hub id
    return {"files": {f.name: _file_identity(f) for f in sorted(folder.iterdir())
                      if f.is_file() and not f.name.startswith(".")}}


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    if stat.st_size <= _WHOLE_FILE_LIMIT:
        return {"sha256": _hash_file(path)}
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        digest.update(stream.read(_EDGE))
        stream.seek(-_EDGE, 2)
        digest.update(stream.read(_EDGE))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "edges_sha256": digest.hexdigest()}


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
