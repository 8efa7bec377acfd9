"""Recipes: every value of a published run, as data, each with the file and line it comes from.

``rmu unlearn --recipe NAME`` (or ``recipe: NAME`` in YAML / :class:`rmu.config.UnlearnConfig`)
fills every option below; options the user gives override the recipe's. The updated layers are
never fixed by a recipe: they follow ``--layer`` (l-2..l), so ``--recipe wmdp-rmu --layer 2``
trains layers 0-2 of a small model.

Sources (read, not copied):

* ``wmdp``: centerforaisafety/wmdp, ``rmu/unlearn.py`` and ``rmu/utils.py``. The upstream repository
  could not be fetched here; line numbers are those of the copy in the fork hkhanuja/Unlearning
  (commit 5a586f5), whose ``unlearn.py:68`` matches the line the published notebook's warnings
  name. The run's values are the configuration printed in ``run_rmu_zephyr.ipynb`` (the notebook
  that produced cais/Zephyr_RMU).
* ``adaptive``: RebelsNLU-jaist/llm-unlearning (commit 0da98e5), ``baselines/adap_rmu/unlearn.py``,
  ``baselines/adap_rmu/utils.py`` and ``experiments/adap_rmu.sh``.
* ``rna``: huutiendang/llmu-robustness (commit f12bf26), ``baselines/rm/rmu/unlearn.py``,
  ``baselines/utils.py`` and ``scripts/rm/rmu.sh``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FirstTopicThenRest:
    """A per-topic value that is ``first`` for topic 0 and ``rest`` for every other topic."""

    first: Any
    rest: Any

    def expand(self, topics: int) -> list:
        return [self.first] + [self.rest] * (topics - 1)

    def __str__(self) -> str:
        return f"{self.first} for the first topic, {self.rest} for the others"


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "file:line (what the line says)"


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    settings: dict[str, Setting]
    required: dict[str, str] = field(default_factory=dict)  # option -> why the user must give it
    notes: tuple[str, ...] = ()

    def values(self, topics: int) -> dict[str, Any]:
        """The recipe's config values, per-topic values expanded for ``topics`` forget topics."""
        resolved = {}
        for name, setting in self.settings.items():
            value = setting.value
            resolved[name] = value.expand(topics) if isinstance(value, FirstTopicThenRest) else value
        return resolved


W_RUN = "wmdp run_rmu_zephyr.ipynb (printed rmu Config)"
W_UNLEARN = "wmdp rmu/unlearn.py"
W_UTILS = "wmdp rmu/utils.py"
A_RUN = "llm-unlearning experiments/adap_rmu.sh"
A_UNLEARN = "llm-unlearning baselines/adap_rmu/unlearn.py"
A_UTILS = "llm-unlearning baselines/adap_rmu/utils.py"
R_RUN = "llmu-robustness scripts/rm/rmu.sh"
R_UNLEARN = "llmu-robustness baselines/rm/rmu/unlearn.py"
R_UTILS = "llmu-robustness baselines/utils.py"


def _original_machinery(unlearn: str, utils: str, lines: dict[str, str]) -> dict[str, Setting]:
    """The switches every original shares (loading, tokenizer, data, optimizer, draws, backward)."""
    return {
        "dtype": Setting("auto", f"{utils} load_model: torch_dtype \"auto\" (bf16 GPU; float16 otherwise)"),
        "optimizer": Setting("adamw-legacy", f"{unlearn}:{lines['optimizer']} transformers' AdamW, defaults"),
        "master_weights": Setting(False, f"{unlearn}:{lines['optimizer']} the optimizer steps the model's own tensors"),
        "train_mode": Setting(True, f"{unlearn}:{lines['train']} updated_model.train()"),
        "corpus_reading": Setting("original", f"{utils} get_data: 'text' only for bio-forget-corpus, raw lines else"),
        "pad_eos": Setting(True, f"{utils} load_model: pad_token_id = eos_token_id"),
        "slow_tokenizer": Setting(True, f"{utils} load_model: use_fast=False"),
        "vector_draw": Setting("original", f"{unlearn}:{lines['vector']} torch.rand(1,1,d) in model dtype, x c"),
        "loss_dtype": Setting("model", f"{unlearn}:{lines['loss']} mse_loss on the activations as they are"),
        "single_backward": Setting(True, f"{unlearn}:{lines['backward']} (forget + retain).backward()"),
        "mask_padding": Setting(False, f"{unlearn}:{lines['loss']} mse over every position, pads included"),
        "mask_first_token": Setting(False, f"{unlearn}:{lines['loss']} mse over every position"),
        "max_len": Setting(FirstTopicThenRest(512, 768), f"{unlearn}:{lines['max_len']} 512 if topic 0 else 768"),
        "retain_max_len": Setting(512, f"{unlearn}:{lines['retain_len']} max_length=512"),
        "params": Setting(["mlp-out"], f"{unlearn}:{lines['params']} param_ids 6: mlp.down_proj.weight in a "
                                       "Mistral/Llama decoder layer"),
    }


WMDP_RMU = Recipe(
    name="wmdp-rmu",
    summary="WMDP's RMU on Zephyr-7B (cais/Zephyr_RMU): 150 steps, c 6.5, alpha 1200, layer 7, layers 5-7",
    settings={
        "method": Setting("rmu", f"{W_UNLEARN}:11 run_rmu"),
        "steering_coeff": Setting(6.5, f"{W_RUN}: steering_coeffs=6.5,6.5"),
        "alpha": Setting(1200.0, f"{W_RUN}: alpha=[1200.0, 1200.0]"),
        "lr": Setting(5e-5, f"{W_RUN}: lr=5e-05"),
        "layer": Setting(7, f"{W_RUN}: layer_id=7 (updated layers l-2..l: layer_ids=[5, 6, 7])"),
        "batch_size": Setting(4, f"{W_RUN}: batch_size=4"),
        "steps": Setting(150, f"{W_RUN}: max_num_batches=150 (bounded by the corpora, {W_UNLEARN}:40)"),
        "seed": Setting(42, f"{W_RUN}: seed=42"),
        "min_len": Setting(0, f"{W_RUN}: min_len=0 (get_data's own default 50 is never used)"),
        "noise": Setting(0.0, f"{W_UNLEARN}:83 retain target is the frozen activation, no noise"),
        **_original_machinery(W_UNLEARN, W_UTILS, dict(optimizer="26", train="24", vector="36-37", loss="68-70",
                                                       backward="89-91", max_len="60", retain_len="74",
                                                       params="25")),
    },
    notes=("The WMDP scripts' MSEs have no .float(): losses are in the model's dtype (bfloat16 for Zephyr); "
           "the published notebook prints bfloat16-rounded losses (e.g. 0.09375).",),
)

ADAPTIVE_RMU = Recipe(
    name="adaptive-rmu",
    summary="The Adaptive RMU authors' run: 500 steps, scale 5, alpha 1200, layer 7 (their sweep: 3..31)",
    settings={
        "method": Setting("adaptive", f"{A_UNLEARN}:12 run_adaptive_rmu"),
        "adaptive_rule": Setting("first-batch", f"{A_UNLEARN}:58-61 one coefficient per topic, from one batch"),
        "adaptive_source": Setting("updated", f"{A_UNLEARN}:54-61 norm of the UPDATED model's layer-l output "
                                              "at step 0 (topic 0) and step 1 (topic 1)"),
        "beta": Setting(5.0, f"{A_RUN}:18 --scale 5.0 (x steering_coeffs 1, line 16)"),
        "alpha": Setting(1200.0, f"{A_RUN}:5,14 ALPHA in 1200"),
        "lr": Setting(5e-5, f"{A_UNLEARN}:146 --lr default 5e-5"),
        "layer": Setting(7, f"{A_RUN}:7,19-20 the sweep runs layers 3..31 with l-2..l updated; 7 is the paper's "
                            "Table 1 row"),
        "batch_size": Setting(4, f"{A_RUN}:15 --batch_size 4"),
        "steps": Setting(500, f"{A_RUN}:9,13 BATCH in 500 -> --max_num_batches"),
        "seed": Setting(42, f"{A_RUN}:1 SEED in 42"),
        "min_len": Setting(0, f"{A_UNLEARN}:147 --min_len default 0"),
        "noise": Setting(0.0, f"{A_UNLEARN}:79-81 retain target is the frozen activation, no noise"),
        **_original_machinery(A_UNLEARN, A_UTILS, dict(optimizer="15", train="13", vector="26-27", loss="65-67",
                                                       backward="85-87", max_len="50", retain_len="70",
                                                       params="153")),
    },
    notes=("The authors' script does not bound the steps by the corpus length (line 30): it would stop with an "
           "IndexError past the last batch; rmu stops at the last batch instead.",
           "Only topics 0 and 1 get a coefficient in the authors' code (lines 39, 58-61); rmu takes topic t's at "
           "step t, the same for two topics."),
)

RNA = Recipe(
    name="rna",
    summary="Random noise augmentation (llmu-robustness): RMU with nu * N(0, I) added to the retain target",
    settings={
        "method": Setting("rmu", f"{R_UNLEARN}:11 run_rmu"),
        "steering_coeff": Setting(6.5, f"{R_RUN}: COEFFS in 6.5"),
        "alpha": Setting(1200.0, f"{R_RUN}: ALPHA in 1200"),
        "lr": Setting(5e-5, f"{R_UNLEARN} get_args: --lr default 5e-5"),
        "layer": Setting(7, f"{R_RUN}: ID in 7, --layer_ids ID-2..ID"),
        "batch_size": Setting(4, f"{R_RUN}: --batch_size 4"),
        "steps": Setting(500, f"{R_RUN}: BATCH in 500 (not bounded by the corpora, {R_UNLEARN}:37)"),
        "seed": Setting(42, f"{R_RUN}: SEED in 42"),
        "min_len": Setting(4, f"{R_UNLEARN} __main__: get_data(forget, retain, args.batch_size) passes the batch "
                              f"size (4) as min_len ({R_UTILS} get_data(..., min_len=0, max_len, batch_size))"),
        **_original_machinery(R_UNLEARN, R_UTILS, dict(optimizer="21", train="19", vector="33-34", loss="62-64",
                                                       backward="87-89", max_len="53", retain_len="68",
                                                       params="20")),
    },
    required={"noise": (f"the published code runs NU in 0.0 with the grid 0.01..0.1 commented out ({R_RUN}) and "
                        "the README's command passes --nu 0.0; no single published nu was found, so give --noise")},
    notes=(f"The noise is torch.randn_like(frozen retain activation) * nu in the model's dtype from the global "
           f"generator ({R_UNLEARN}:78-79); with vector_draw original rmu draws it the same way.",
           "The script does not bound the steps by the corpus length; rmu stops at the last batch instead."),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (WMDP_RMU, ADAPTIVE_RMU, RNA)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)} (list them: rmu recipes)")
    return RECIPES[name]


def apply_recipe(values: dict[str, Any], topics: int) -> dict[str, Any]:
    """``values`` with the named recipe's settings filled in under them (the user's values win)."""
    name = values.get("recipe")
    if not name:
        return values
    recipe = get_recipe(name)
    for option, why in recipe.required.items():
        if values.get(option) is None:
            raise ValueError(f"--recipe {name} needs --{option.replace('_', '-')}: {why}")
    return recipe.values(max(topics, 1)) | {k: v for k, v in values.items() if v is not None}


def describe(recipe: Recipe) -> str:
    """The recipe as ``rmu recipes`` prints it: each value with its source."""
    width = max(len(k) for k in (*recipe.settings, *recipe.required))
    shown = {name: _show(setting.value) for name, setting in recipe.settings.items()}
    shown |= {name: "(required)" for name in recipe.required}
    value_width = max(len(v) for v in shown.values() if len(v) <= 16)
    sources = {name: s.source for name, s in recipe.settings.items()} | dict(recipe.required)
    lines = [f"{recipe.name}: {recipe.summary}"]
    for name, value in shown.items():
        lines.append(f"  {name.ljust(width)}  {value.ljust(value_width)}  <- {sources[name]}")
    lines.append("  update_layers follow --layer: l-2, l-1, l")
    lines.extend(f"  note: {note}" for note in recipe.notes)
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
