"""Issue #12 with the scale rule: RMU (and Adaptive RMU) ``--keyword-robust`` on the demo benchmark
(SmolLM2, elements) with the settings ``--auto all`` calibrates instead of the demo's fixed ones
(RMU's c = 6.5 there), measured exactly as docs/robustness.md's keyword-robust table
(``rmu.demo.keyword_robustness``: 100 forget / 90 retain questions, four keyword sentences).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/keyword_robust_rule.py OUTPUT [VARIANT ...] [--model gemma3-270m]
        [--data DIR --attack-keywords FILE --topic-template "The {keyword} is an animal."] [--seed N]

Variants: rmu-rule, rmu-rule+kr, adaptive-rule, adaptive-rule+kr, rmu-rule-alpha300(+kr) (the rule's
lr and c, the demo's alpha 300), rmu-rule+kr-mask, rmu-rule-alpha300+kr-mask ("+kr": --keyword-robust
--no-keyword-mask, as first measured; "+kr-mask": with --keyword-mask, today's default) (default:
rmu-rule, rmu-rule+kr), adaptive-rule+kr-mask, adaptive-inf-lr3x(+kr-mask) (``--loss-dims
informative --mask-first-token`` at lr 2.6e-4, for Gemma), adaptive-inf-tuned(+kr-mask) (the best
settings of ``rmu tune --loss-dims informative`` on Gemma 3 270M / elements, docs/tuning.md),
adaptive-inf-tuned-alpha2x+kr-mask (the same with twice its alpha),
adaptive-inf-tuned+kr-mask-fraction0.25 (a quarter of the retain documents augmented),
adaptive-an-tuned(+kr-mask, +kr-mask-fraction0.25) (the best settings of ``rmu tune`` on Gemma 3 270M /
animals, docs/tuning.md "Search ranges"; run them with the animals topic's ``--data``),
adaptive-an-tuned+kr-mask-f, adaptive-an-tuned+kr-mask-bi-f (the same with ``--keyword-forget-focus``, and with
``--keyword-positions before,inside`` too), rmu-an-tuned(+kr-mask)
(the same lr, alpha, steps, noise and loss dimensions with RMU, c = 1.3 x the layer's forget norm on the
informative dimensions, measured by the scale rule's calibration as ``rmu tune`` sets RMU's c), base (the
model before unlearning). ``--model gemma3-270m``: Gemma 3 270M instead of SmolLM2 (prepared by
``rmu.demo.model.gemma3_270m_path``). ``--data DIR --attack-keywords FILE --topic-template T``: another
topic instead of the demo benchmark, as ``python -m rmu.demo.keyword_robustness`` takes them. Each writes
``OUTPUT/<variant>.json`` as the demo driver does, plus ``OUTPUT/<variant>.calibration.json`` (the rule's
measurements and chosen lr, alpha and coefficient; for rmu-an-tuned the forget norm and the c it gave).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import rmu.demo.keyword_robustness as driver
from rmu import scale
from rmu.engine import calibrate

RULE = {"auto": ["lr", "alpha", "coeff"]}
INFORMATIVE = {"method": "adaptive", "auto": ["alpha", "coeff"], "lr": 2.6e-4, "loss_dims": "informative",
               "mask_first_token": True}
TUNED_GEMMA_ELEMENTS = {"method": "adaptive", "layer": 7, "steps": 64, "lr": 7.53e-4, "alpha": [76.3], "beta": 3.513,
                        "noise": 1.79, "loss_dims": "informative", "mask_first_token": True}
# Gemma 3 270M / animals: the best of `rmu tune` with --lr-range/--alpha-range (docs/tuning.md, "Search ranges";
# trial 19 of /work/runs/ranges-gemma-an); batches, lengths, padding and min_len are the demo's, as in the study
TUNED_GEMMA_ANIMALS = {"layer": 7, "update_layers": [5, 6, 7], "params": ["mlp-out"], "steps": 57, "lr": 1.83e-3,
                       "alpha": [10.5], "noise": 11.5, "loss_dims": "informative", "mask_first_token": True}
KR_MASK = {"keyword_robust": True, "keyword_mask": True}
ADAPTIVE_AN = TUNED_GEMMA_ANIMALS | {"method": "adaptive", "beta": 1.3}  # the study's own method and beta
# RMU variants whose c is this ratio x the layer's forget norm (the scale rule's measurement, over the loss's
# dimensions), as `rmu tune` sets RMU's c for a coeff_ratio: the counterpart of Adaptive RMU's beta
COEFF_RATIOS = {"rmu-an-tuned": 1.3, "rmu-an-tuned+kr-mask": 1.3}
VARIANTS = {
    "base": None,  # the model before unlearning (the driver's)
    "rmu-rule": {"method": "rmu"} | RULE,
    "rmu-rule+kr": {"method": "rmu"} | driver.KR | RULE,
    "adaptive-rule": {"method": "adaptive"} | RULE,
    "adaptive-rule+kr": {"method": "adaptive"} | driver.KR | RULE,
    # the rule's lr and c with the demo's alpha (300): is the rule's larger alpha what costs forgetting?
    "rmu-rule-alpha300": {"method": "rmu", "auto": ["lr", "coeff"]},
    "rmu-rule-alpha300+kr": {"method": "rmu", "auto": ["lr", "coeff"]} | driver.KR,
    # --keyword-mask (the inserted sentence's tokens out of the retain loss) with the rule's settings
    "rmu-rule+kr-mask": {"method": "rmu", "keyword_robust": True, "keyword_mask": True} | RULE,
    "rmu-rule-alpha300+kr-mask": {"method": "rmu", "keyword_robust": True, "keyword_mask": True,
                                  "auto": ["lr", "coeff"]},
    "adaptive-rule+kr-mask": {"method": "adaptive", "keyword_robust": True, "keyword_mask": True} | RULE,
    # Gemma 3 270M: losses without the massive dimensions at 3x the rule's lr there (docs/tuning.md)
    "adaptive-inf-lr3x": INFORMATIVE,
    "adaptive-inf-lr3x+kr-mask": INFORMATIVE | {"keyword_robust": True, "keyword_mask": True},
    # Gemma 3 270M: the best of `rmu tune --loss-dims informative` on elements (docs/tuning.md)
    "adaptive-inf-tuned": TUNED_GEMMA_ELEMENTS,
    "adaptive-inf-tuned+kr-mask": TUNED_GEMMA_ELEMENTS | {"keyword_robust": True, "keyword_mask": True},
    # ... with twice its alpha: does a stronger retain pull give back the retain accuracy the option cost?
    "adaptive-inf-tuned-alpha2x+kr-mask": TUNED_GEMMA_ELEMENTS | {"alpha": [152.6], "keyword_robust": True,
                                                                  "keyword_mask": True},
    # ... with a quarter of the retain documents augmented (half by default): more plain retain text held
    "adaptive-inf-tuned+kr-mask-fraction0.25": TUNED_GEMMA_ELEMENTS | {"keyword_robust": True, "keyword_mask": True,
                                                                       "keyword_fraction": 0.25},
    # Gemma 3 270M: the best of `rmu tune` on animals (the topic nothing made Gemma forget before), and RMU at them
    "adaptive-an-tuned": ADAPTIVE_AN,
    "adaptive-an-tuned+kr-mask": ADAPTIVE_AN | KR_MASK,
    "adaptive-an-tuned+kr-mask-fraction0.25": ADAPTIVE_AN | KR_MASK | {"keyword_fraction": 0.25},
    # ... with the options that gave back some of SmolLM2's animals forgetting (docs/robustness.md, "Giving back")
    "adaptive-an-tuned+kr-mask-f": ADAPTIVE_AN | KR_MASK | {"keyword_forget_focus": True},
    "adaptive-an-tuned+kr-mask-bi-f": ADAPTIVE_AN | KR_MASK
    | {"keyword_forget_focus": True, "keyword_positions": ["before", "inside"]},
    "rmu-an-tuned": TUNED_GEMMA_ANIMALS | {"method": "rmu"},
    "rmu-an-tuned+kr-mask": TUNED_GEMMA_ANIMALS | {"method": "rmu"} | KR_MASK,
}
MODELS = ("smollm2", "gemma3-270m")


def with_coefficient_ratio(config, ratio: float, model, tokenizer):
    """``config`` (RMU) with c = ``ratio`` x each topic's layer-l forget norm, measured by the scale rule's
    calibration over the dimensions the losses use (``--loss-dims``), and that calibration."""
    calibration = calibrate(config.model_copy(update={"auto": ["coeff"]}), model=model, tokenizer=tokenizer)
    coefficients = [scale.steering_coefficient(ratio, topic["forget_norm"]) for topic in calibration["topics"]]
    return config.model_copy(update={"steering_coeff": coefficients}), {
        "coeff_ratio": ratio, "steering_coeff": coefficients, "measured": calibration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("variants", nargs="*", default=["rmu-rule", "rmu-rule+kr"],
                        help=f"some of {', '.join(VARIANTS)}")
    parser.add_argument("--model", choices=MODELS, default="smollm2")
    parser.add_argument("--auto-lr", choices=("steps", "sign-step"), default=None,
                        help="the scale rule's lr for the variants that calibrate it (default: rmu's, steps); "
                             "sign-step reproduces the rows measured before the real-steps probe")
    parser.add_argument("--seed", type=int, default=None, help="the unlearning seed (default: the demo's)")
    parser.add_argument("--data", help="another topic's folder of corpora and questions (default: the demo benchmark)")
    parser.add_argument("--attack-keywords", help="with --data: the attack's keywords, one a line")
    parser.add_argument("--topic-template", help="with --data: the topic's own keyword sentence")
    arguments = parser.parse_args()
    unknown = [n for n in arguments.variants if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if arguments.data and not arguments.attack_keywords:
        parser.error("--data needs --attack-keywords FILE (the topic's keywords to insert, one a line)")
    if not arguments.data and (arguments.attack_keywords or arguments.topic_template):
        parser.error("--attack-keywords and --topic-template go with --data (the demo benchmark has its own)")
    output, names, model = arguments.output, arguments.variants, arguments.model
    chosen = {name: options if options is None else options | (
        {"auto_lr": arguments.auto_lr} if arguments.auto_lr and "lr" in options.get("auto", []) else {})
        for name, options in VARIANTS.items()}
    driver.VARIANTS.update(chosen)
    real_unlearn, current = driver.unlearn, {}

    def unlearn_and_record(config, **kwargs):  # the driver keeps no calibration; write it beside its json
        calibration = None
        if current["name"] in COEFF_RATIOS:
            config, calibration = with_coefficient_ratio(config, COEFF_RATIOS[current["name"]], kwargs["model"],
                                                         kwargs["tokenizer"])
        result = real_unlearn(config, **kwargs)
        calibration = calibration or result.calibration
        (output / f"{current['name']}.calibration.json").write_text(json.dumps(calibration, indent=2))
        return result

    driver.unlearn = unlearn_and_record
    output.mkdir(parents=True, exist_ok=True)
    model_dir = None
    if model == "gemma3-270m":
        from rmu.demo.model import gemma3_270m_path

        model_dir = gemma3_270m_path()
    for name in names:
        current["name"] = name
        driver.run(output, [name], model_dir=model_dir, seed=arguments.seed, data=arguments.data,
                   attack_keywords=arguments.attack_keywords, topic_template=arguments.topic_template)


if __name__ == "__main__":
    main()
