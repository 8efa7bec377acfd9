"""The Hugging Face model card of a checkpoint written by ``rmu unlearn``.

The card (``README.md``: YAML metadata, then a short text) says what the checkpoint is without
opening run.json: the base model, what was unlearned, the method and its key settings, the run's
health verdict (:mod:`rmu.health`) and how to load it. It is built with huggingface_hub's
:class:`~huggingface_hub.ModelCard` (offline, no hub call) and written into the run's
``.incomplete`` folder before the rename, so every finished run has one.

A checkpoint copied from a source folder brings the source's README.md, the base model's card.
It is kept as ``BASE_MODEL_CARD_FILE`` (it may state the licence that still applies) and our card
takes its place; its licence, when it names one, is repeated in our metadata.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

CARD_FILE = "README.md"
BASE_MODEL_CARD_FILE = "BASE_MODEL_README.md"
KEY_SETTINGS = {  # shown in the text, per method; the metadata holds the whole configuration
    "rmu": ("recipe", "layer", "update_layers", "steering_coeff", "alpha", "lr", "steps", "batch_size", "max_len",
            "seed"),
    "adaptive-rmu": ("recipe", "layer", "update_layers", "beta", "adaptive_rule", "alpha", "lr", "steps",
                     "batch_size", "max_len", "seed"),
}
log = logging.getLogger("rmu")


def write_card(folder: Path, run: dict, output: Path) -> Path:
    """Write ``folder/README.md`` for the run summarised by ``run`` (run.json's content).

    ``output`` is where the folder will end up (named in the loading example).
    """
    folder = Path(folder)
    base_card = _keep_base_card(folder)
    card = build_card(run, output, base_card=base_card is not None, license_=_license(base_card))
    card.save(folder / CARD_FILE)
    return folder / CARD_FILE


def build_card(run: dict, output: Path, base_card: bool = False, license_: str | None = None) -> ModelCard:
    config = run["config"]
    method = "adaptive-rmu" if config["method"] == "adaptive" else "rmu"
    health = run.get("health") or {}
    data = ModelCardData(
        base_model=str(config["model"]),
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license_,
        tags=["unlearning", method, "representation-misdirection"],
        rmu=_plain({"method": method, "topics": list(config["forget"]), "health": health.get("verdict"),
                    "coefficients": run.get("coefficients"), "versions": run.get("versions"), "config": config}),
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(run, method, output, base_card)}")


def _plain(value):
    """JSON's types only (version objects become strings): the YAML must load without Python tags."""
    return json.loads(json.dumps(value, default=str))


def _body(run: dict, method: str, output: Path, base_card: bool) -> str:
    config = run["config"]
    health = run.get("health") or {}
    name = "Adaptive RMU" if method == "adaptive-rmu" else "RMU"
    topics = ", ".join(f"`{topic}` (forget corpus `{corpus}`)" for topic, corpus in config["forget"].items())
    settings = "\n".join(f"| {key} | `{json.dumps(config[key])}` |" for key in KEY_SETTINGS[method]
                         if config.get(key) is not None)
    lines = [
        f"# {Path(output).name}: `{config['model']}` with knowledge unlearned by {name}",
        "",
        f"This checkpoint is `{config['model']}` after unlearning with {name} (representation misdirection,"
        " written by the rmu toolkit): the layers it updated were trained so that text on the forget"
        " topics turns into noise at layer "
        f"{config['layer']}, while text from the retain corpora keeps its representations.",
        "",
        f"- **Unlearned topics:** {topics}",
        f"- **Retain corpora:** {', '.join(f'`{c}`' for c in config['retain'])}",
        f"- **Method:** {name}" + (f" (recipe `{config['recipe']}`)" if config.get("recipe") else ""),
        f"- **Trained parameters:** {', '.join(f'`{p}`' for p in run.get('trained_parameters') or [])}",
        f"- **Run health:** `{health.get('verdict', 'not measured')}`",
        *(f"  - warning: {w['message']}" for w in health.get("warnings", [])),
        "",
        "## Key settings",
        "",
        "| setting | value |",
        "|---|---|",
        settings,
        "",
        "Every setting is in this card's metadata (`rmu.config`) and in `run.json` beside it, with the step log"
        " and the health measurements; the random control vectors are in `control_vectors.safetensors`.",
        "The health verdict checks the representations (see rmu's README, \"Run health\"); the accuracy on"
        " questions about the topics is the real test (`rmu eval --model <this folder>`).",
        "",
        "## How to load",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{output}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{output}")',
        "```",
        "",
        "## Base model",
        "",
        f"Everything not listed above is `{config['model']}` unchanged; its licence and terms of use apply."
        + (f" Its own model card is kept beside this one as `{BASE_MODEL_CARD_FILE}`." if base_card else ""),
        "",
    ]
    return "\n".join(lines)


def _keep_base_card(folder: Path) -> Path | None:
    """Move a README.md copied from the source checkpoint aside; return where it went (None: none)."""
    source = folder / CARD_FILE
    if not source.is_file():
        return None
    return source.rename(folder / BASE_MODEL_CARD_FILE)


def _license(card: Path | None) -> str | None:
    if card is None:
        return None
    try:
        license_ = ModelCard.load(card).data.license
    except Exception as error:  # noqa: BLE001 - a card we cannot parse names no licence for us
        log.debug("could not read the base model's card %s: %s", card, error)
        return None
    return license_ if isinstance(license_, str) else None
