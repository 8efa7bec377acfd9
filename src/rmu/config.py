"""The configuration of an unlearning run: plain values, validated early, saved in run.json.

Options that may differ per forget topic (steering coefficient, beta, alpha, forget truncation
length) accept one value for all topics, a list, or a comma-separated string.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from rmu.errors import RmuError

Method = Literal["rmu", "adaptive"]
AdaptiveRule = Literal["first-batch", "per-sample"]
DType = Literal["float32", "bfloat16", "float16", "auto"]  # auto: the checkpoint's own dtype

PER_TOPIC_FIELDS = ("steering_coeff", "beta", "alpha", "max_len")
MAX_TOKENS = 2**31 - 1  # truncation lengths beyond this overflow the tokenizers' integers
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range


class ConfigError(RmuError, ValueError):
    """A configuration value is wrong; the message names the option and the fix."""


def _split_list(value: Any) -> Any:
    """'1,2,3' -> ['1', '2', '3']; other values unchanged."""
    if isinstance(value, str) and "," in value:
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class UnlearnConfig(BaseModel):
    """Everything that determines an RMU / Adaptive RMU run.

    Defaults are rmu's (see the README's "Differences from the published code"); ``recipe``
    sets the values of a published run instead.
    """

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
    min_len: int = 0  # documents of at most this many characters are dropped (the published runs pass 0)
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
    # Run folders (issue #10): stop a run whose losses explode though finite (rmu.divergence).
    divergence_check: bool = True

    # --- Recipes and the published code's switches (issue #13; see rmu.recipes and the README's
    # "Differences from the published code"). Each switch works on its own; a recipe sets them all.
    recipe: str | None = None  # wmdp-rmu | adaptive-rmu | rna: fills every option not given
    optimizer: Literal["adamw", "adamw-legacy"] = "adamw"  # adamw-legacy: transformers' removed AdamW
    master_weights: bool = True  # half precision: step float32 copies of the trained tensors
    train_mode: bool = False  # run the updated layers in train() mode (dropout), as the originals
    corpus_reading: Literal["rmu", "original"] = "rmu"  # original: WMDP get_data's reading (name rule, raw lines)
    pad_eos: bool = False  # force pad = EOS even when the tokenizer has its own pad token
    slow_tokenizer: bool = False  # load the slow (Python) tokenizer, use_fast=False
    vector_draw: Literal["rmu", "original"] = "rmu"  # original: torch.rand in the model's dtype after manual_seed
    adaptive_source: Literal["frozen", "updated"] = "frozen"  # updated: the authors' norm at the topic's first step
    loss_dtype: Literal["float32", "model"] = "float32"  # model: MSEs in the activations' own dtype
    single_backward: bool = False  # one backward of forget + retain, as the scripts (default: two, less memory)
    verbose_metrics: bool = False  # per step: cosines updated/frozen and the four norms (one more frozen pass)

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, values: Any) -> Any:
        if not isinstance(values, dict) or not values.get("recipe"):
            return values
        from rmu.recipes import apply_recipe

        forget = values.get("forget")
        topics = len(forget) if isinstance(forget, (dict, list, tuple)) else 1
        return apply_recipe(values, topics)

    # Scale rule (rmu.scale, issue #11): these settings are calibrated from the model's measured
    # layer-l norms before the run instead of taken as given ("all" = lr, alpha, coeff).
    auto: list[Literal["lr", "alpha", "coeff"]] = []

    @field_validator("auto", mode="before")
    @classmethod
    def _auto_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and "all" in value:
            return ["lr", "alpha", "coeff"]
        return value

    # The scale rule's lr (rmu.scale, issue #11): "steps" checks the one-sign-step rule's lr against a few
    # real optimizer steps from the original weights and raises it by the measured shortfall (weights,
    # optimizer and noise put back); "sign-step" is the one-step rule alone. Used with "lr" in auto only.
    auto_lr: Literal["steps", "sign-step"] = "steps"

    # Losses on the informative dimensions (issue #11, rmu.losses.informative_dims): with "informative"
    # both losses, the control vector u, Adaptive RMU's norm, the scale rule and the health report use
    # only the layer-l dimensions that are NOT massive (rmu.scale.massive_activations on the topic's
    # first frozen forget batch; Gemma 3 270M: 6 dimensions hold 98% of |h|^2); "forget-informative":
    # the same for the forget loss, the retain loss over every dimension. "all": every dimension.
    loss_dims: Literal["all", "informative", "forget-informative"] = "all"

    # Keyword-robust unlearning (issue #12, rmu.keywords): retain documents that mention forget keywords.
    keyword_robust: bool = False
    keywords: str | None = None  # keyword file, one a line (default: found from the forget and retain corpora)
    keyword_fraction: float = 0.5  # share of retain documents that get a keyword sentence
    keyword_mask: bool = True  # the retain loss leaves out the inserted sentence's own tokens (no: holds them too)
    # Where the sentences go and how much text after one the retain loss holds (#12, animals; rmu.keywords).
    keyword_positions: list[Literal["before", "after", "inside"]] = ["before", "after", "inside"]
    keyword_window: int | None = None  # with --keyword-mask: hold only this many tokens after the sentence
    keyword_forget_focus: bool = False  # the forget loss counts each sentence from its first keyword on only
    keyword_retain_weight: float = 1.0  # with --keyword-mask: an augmented document's positions count this much

    @field_validator("forget", mode="before")
    @classmethod
    def _forget_mapping(cls, value: Any) -> Any:
        if isinstance(value, (str, list, tuple)):
            return parse_topic_sources([value] if isinstance(value, str) else list(value))
        return value

    @field_validator("retain", "params", "keyword_positions", mode="before")
    @classmethod
    def _string_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("update_layers", *PER_TOPIC_FIELDS, mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split_list(value)

    # Input validation (issue #10): types as declared, finite numbers in range, devices that exist.
    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads yes/no/on/off/true/false as booleans: never take one as a number, or a number as one."""
        kinds = _scalar_kinds(cls.model_fields[info.field_name].annotation)
        items = value if isinstance(value, (list, tuple)) else [value]
        if kinds and bool not in kinds and any(isinstance(item, bool) for item in items):
            raise ValueError(f"{value!r} is a true/false value, not a number (YAML reads yes, no, on, off, "
                             "true and false as booleans); give a number")
        if kinds == {bool} and value is not None and not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false; give true or false")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)

    @model_validator(mode="after")
    def _check(self) -> "UnlearnConfig":
        topics = list(self.forget)
        if not topics:
            raise ValueError("give at least one forget corpus (--forget NAME=FILE)")
        for name, source in self.forget.items():
            _check_topic(name, source)
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
        self._check_ranges()
        if self.adaptive_source == "updated" and self.method == "adaptive" and self.adaptive_rule != "first-batch":
            raise ValueError("--adaptive-source updated belongs to the first-batch rule; drop it or use "
                             "--adaptive-rule first-batch")
        if self.resume and self.vector_draw == "original" and self.noise > 0:
            raise ValueError("--resume cannot continue the noise of --vector-draw original (torch's global "
                             "generator is not saved); rerun from the start or use --vector-draw rmu")

        if self.keywords is not None and not self.keyword_robust:
            raise ValueError("--keywords is used by --keyword-robust; add --keyword-robust or drop --keywords")
        if self.keyword_robust and (self.keyword_mask or self.keyword_forget_focus) and self.slow_tokenizer:
            raise ValueError("--keyword-robust finds its inserted sentences' tokens with a fast tokenizer (offset "
                             "mapping); drop --slow-tokenizer, or add --no-keyword-mask (and drop "
                             "--keyword-forget-focus)")
        if not 0 < self.keyword_fraction <= 1:
            raise ValueError(f"--keyword-fraction {self.keyword_fraction} must lie in (0, 1]")
        if not self.keyword_positions or len(set(self.keyword_positions)) != len(self.keyword_positions):
            raise ValueError(f"--keyword-positions {','.join(self.keyword_positions)}: give each of before, after, "
                             "inside at most once, at least one of them")
        if not 0 < self.keyword_retain_weight <= 1 or (self.keyword_retain_weight != 1 and not self.keyword_mask):
            raise ValueError(f"--keyword-retain-weight {self.keyword_retain_weight}: a weight in (0, 1], with "
                             "--keyword-mask")
        if self.keyword_window is not None and (self.keyword_window < 1 or not self.keyword_mask):
            raise ValueError(f"--keyword-window {self.keyword_window}: a number of tokens >= 1, with --keyword-mask "
                             "(the window starts where the masked sentence ends)")
        if self.fsdp and (self.save_every or self.resume):
            raise ValueError("--save-every and --resume are not supported with --fsdp yet")
        return self

    def _check_ranges(self) -> None:
        """Finite numbers, in the range where each one means something (issue #10)."""
        for name in ("lr", "noise", "steering_coeff", "beta", "alpha"):
            values = getattr(self, name)
            for value in values if isinstance(values, list) else [values]:
                if not math.isfinite(value):
                    raise ValueError(f"--{_flag(name)} is {value}; give a finite number")
        for name, meaning in (("steering_coeff", "the norm of the forget target c*u"),
                              ("beta", "a multiple of the frozen activation norm"),
                              ("alpha", "the weight of the retain loss")):
            negative = [value for value in getattr(self, name) if value < 0]
            if negative:
                raise ValueError(f"--{_flag(name)} {negative[0]:g} is negative; it is {meaning}: give 0 or more")
        if self.min_len < 0:
            raise ValueError(f"--min-len {self.min_len} is negative; give 0 or more characters (0 keeps every document)")
        for name in ("max_len", "retain_max_len"):
            values = getattr(self, name)
            too_large = [value for value in (values if isinstance(values, list) else [values]) if value > MAX_TOKENS]
            if too_large:
                raise ValueError(f"--{_flag(name)} {too_large[0]} is too large; give at most {MAX_TOKENS} tokens "
                                 "(and at most the model's position limit)")
        for name in ("seed", "noise_seed"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_SEED:
                raise ValueError(f"--{_flag(name)} {value} is out of range; give 0..{MAX_SEED}")

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
            raise ConfigError(f"forget topic '{name}' is given twice; name topics with NAME=FILE")
        _check_topic(name, source.strip(), item)
        topics[name] = source.strip()
    return topics


def _check_topic(name: str, source: str, given: str | None = None) -> None:
    given = given if given is not None else f"{name}={source}"
    if not name:
        raise ConfigError(f"--forget {given!r}: the topic name is empty; write NAME=FILE, or FILE alone to name "
                          "the topic after the file")
    if not source:
        raise ConfigError(f"--forget {given!r}: no corpus after the topic name; write NAME=FILE")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _scalar_kinds(annotation: Any) -> set[type]:
    """The scalar types bool, int, float that a field's annotation admits (list[float] | float -> {float})."""
    if get_origin(annotation) is Literal:
        return set()
    args = get_args(annotation)
    if not args:
        return {annotation} & {bool, int, float}
    return set().union(*(_scalar_kinds(arg) for arg in args))


def resolve_device(option: str):
    """The torch device a ``--device`` option names; ``auto`` is cuda when this machine has it, else cpu."""
    import torch

    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(option)


def check_device(option: str) -> str:
    """``option`` if it names a device this machine has (auto, cpu, cuda, cuda:N, mps, ...), else a ConfigError."""
    if option == "auto":
        return option
    import torch

    try:
        device = torch.device(option)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {option!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "meta":
        raise ConfigError("--device meta holds no data; use auto, cpu, cuda, cuda:N or mps")
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if backend is not None and hasattr(backend, "is_available") and not backend.is_available():
        raise ConfigError(f"--device {option}: this machine has no {device.type.upper()} device that torch "
                          f"{torch.__version__} can use; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {option}: there are {torch.cuda.device_count()} CUDA devices "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return option


def make_config(values: dict[str, Any]) -> UnlearnConfig:
    """Validate ``values`` into a config, turning pydantic's errors into one readable ConfigError."""
    try:
        return UnlearnConfig(**values)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            loc = [str(part) for part in item["loc"]]
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                lines.append(f"unknown option {'.'.join(loc)!r}; the options are those of rmu unlearn --help")
            elif not loc or message.startswith(f"--{_flag(loc[0])}"):
                lines.append(message)
            else:  # name the option as on the command line: --update-layers.0: ...
                lines.append(f"--{_flag('.'.join(loc))}: {message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (keys as in UnlearnConfig, dashes allowed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.constructor.ConstructorError as error:
        # safe_load builds plain values only; a tag such as !!python/object would run code.
        tag = re.search(r"tag '([^']+)'", str(error.problem))
        what = f"the tag {tag.group(1).replace('tag:yaml.org,2002:', '!!')}" if tag else f"({error.problem})"
        raise ConfigError(f"config file {path}{_yaml_place(error)}: refused {what}; rmu reads YAML with safe_load, "
                          "which builds plain values only (no Python objects): remove the tag") from None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"config file {path}{_yaml_place(error)}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _yaml_place(error: Exception) -> str:
    mark = getattr(error, "problem_mark", None)
    return f", line {mark.line + 1}" if mark is not None else ""
