"""The configuration of an unlearning run: plain values, validated early, saved in run.json.

Options that the reference code sets per forget topic (steering coefficient, beta, alpha, forget
truncation length) accept one value for all topics, a list, or a comma-separated string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Method = Literal["rmu", "adaptive"]
AdaptiveRule = Literal["first-batch", "per-sample"]
DType = Literal["float32", "bfloat16", "float16"]

PER_TOPIC_FIELDS = ("steering_coeff", "beta", "alpha", "max_len")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the option and the fix."""


def _split_list(value: Any) -> Any:
    """'1,2,3' -> ['1', '2', '3']; other values unchanged."""
    if isinstance(value, str) and "," in value:
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class UnlearnConfig(BaseModel):
    """Everything that determines an RMU / Adaptive RMU run. Defaults follow the reference code."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    model: str = Field(description="local checkpoint folder or Hugging Face hub id")
    forget: dict[str, str] = Field(description="forget topic name -> corpus (file or hf:name:config:split)")
    retain: list[str] = Field(description="one retain corpus for all topics, or one per topic")
    method: Method = "rmu"
    adaptive_rule: AdaptiveRule = "first-batch"
    layer: int = 7
    update_layers: list[int] | None = None  # default: layer-2, layer-1, layer
    params: list[str] = ["mlp-out"]
    steering_coeff: list[float] | float = 6.5
    beta: list[float] | float = 5.0
    alpha: list[float] | float = 1200.0
    max_len: list[int] | int = 512
    retain_max_len: int = 512
    min_len: int = 50  # documents of at most this many characters are dropped, as in the reference
    lr: float = 5e-5
    batch_size: int = 4
    steps: int = 150
    seed: int = 42
    noise: float = 0.0
    noise_seed: int | None = None  # default: seed
    mask_padding: bool = False
    mask_first_token: bool = False  # drop each row's first real token (the attention sink) from losses
    dtype: DType = "float32"
    device: str = "auto"
    output: str | None = None
    overwrite: bool = False
    save_every: int = 0
    resume: bool = False
    control_vectors: str | None = None
    trust_remote_code: bool = False
    full_load: bool = False  # load the whole model instead of layers 0..l only
    gradient_checkpointing: bool = False  # recompute the updated layers in backward (less memory)
    fsdp: bool = False  # shard layers 0..l across ranks with FSDP2 as they are read (under torchrun)
    # Keyword-robust unlearning (issue #12, rmu.keywords): retain documents that mention forget keywords.
    keyword_robust: bool = False
    keywords: str | None = None  # keyword file, one a line (default: found from the forget and retain corpora)
    keyword_fraction: float = 0.5  # share of retain documents that get a keyword sentence

    @field_validator("forget", mode="before")
    @classmethod
    def _forget_mapping(cls, value: Any) -> Any:
        if isinstance(value, (str, list, tuple)):
            return parse_topic_sources([value] if isinstance(value, str) else list(value))
        return value

    @field_validator("retain", "params", mode="before")
    @classmethod
    def _string_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("update_layers", *PER_TOPIC_FIELDS, mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split_list(value)

    @model_validator(mode="after")
    def _check(self) -> "UnlearnConfig":
        topics = list(self.forget)
        if not topics:
            raise ValueError("give at least one forget corpus (--forget NAME=FILE)")
        for name in PER_TOPIC_FIELDS:
            value = getattr(self, name)
            values = list(value) if isinstance(value, list) else [value] * len(topics)
            if len(values) == 1:
                values = values * len(topics)
            if len(values) != len(topics):
                raise ValueError(
                    f"--{name.replace('_', '-')} has {len(values)} values but there are "
                    f"{len(topics)} forget topics ({', '.join(topics)}); give one value or one per topic"
                )
            setattr(self, name, values)
        if len(self.retain) not in (1, len(topics)):
            raise ValueError(
                f"--retain has {len(self.retain)} corpora for {len(topics)} forget topics; "
                "give one retain corpus for all topics or one per topic"
            )
        if self.update_layers is None:
            self.update_layers = [i for i in (self.layer - 2, self.layer - 1, self.layer) if i >= 0]
        self.update_layers = sorted(set(int(i) for i in self.update_layers))
        if self.layer < 0:
            raise ValueError(f"--layer {self.layer} must be 0 or more")
        if any(i > self.layer or i < 0 for i in self.update_layers):
            raise ValueError(
                f"--update-layers {self.update_layers} must lie in 0..{self.layer} (the steered layer "
                "--layer): weights above it cannot change its output"
            )
        for name in ("batch_size", "steps", "retain_max_len", "lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        if any(m <= 0 for m in self.max_len):
            raise ValueError("--max-len must be positive")
        if self.noise < 0 or self.save_every < 0:
            raise ValueError("--noise and --save-every must be 0 or more")
        if self.keywords is not None and not self.keyword_robust:
            raise ValueError("--keywords is used by --keyword-robust; add --keyword-robust or drop --keywords")
        if not 0 < self.keyword_fraction <= 1:
            raise ValueError(f"--keyword-fraction {self.keyword_fraction} must lie in (0, 1]")
        if self.fsdp and (self.save_every or self.resume):
            raise ValueError("--save-every and --resume are not supported with --fsdp yet")
        return self

    @property
    def topics(self) -> list[str]:
        return list(self.forget)

    def retain_for(self, topic_index: int) -> str:
        return self.retain[topic_index if len(self.retain) > 1 else 0]


def parse_topic_sources(items: list[str]) -> dict[str, str]:
    """['bio=a.jsonl', 'b.txt'] -> {'bio': 'a.jsonl', 'b': 'b.txt'} (name defaults to the file stem)."""
    topics: dict[str, str] = {}
    for item in items:
        name, sep, source = item.partition("=")
        if not sep or source.startswith("="):
            source = item
            name = source.split(":")[1] if source.startswith("hf:") else Path(source).stem
        name = name.strip()
        if name in topics:
            raise ValueError(f"forget topic '{name}' is given twice; name topics with NAME=FILE")
        topics[name] = source.strip()
    return topics


def make_config(values: dict[str, Any]) -> UnlearnConfig:
    """Validate ``values`` into a config, turning pydantic's errors into one readable ConfigError."""
    try:
        return UnlearnConfig(**values)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"]) or "config"
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if where != "config" else message)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (keys as in UnlearnConfig, dashes allowed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
