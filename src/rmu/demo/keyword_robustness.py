"""``--keyword-robust`` measured on the demo benchmark: what ``docs/robustness.md`` reports.

``python -m rmu.demo.keyword_robustness OUTPUT [VARIANT ...]`` unlearns SmolLM2 (or
``--model-dir``) with the settings of ``rmu demo`` (:data:`rmu.demo.settings.DEFAULT`) once per variant
(:data:`VARIANTS`: method x keyword options), in memory from the same base weights, and measures
each model: forget accuracy (100 questions), retain accuracy (90) and retain accuracy with a forget
keyword under :data:`EVAL_VARIANTS` (templates and positions none of which ``--keyword-robust``
trains on), with the keywords of the attack in ``docs/robustness.md`` (element names of the forget
corpus) and with element names the corpus never mentions (those of the forget questions). Each
model's numbers go to ``OUTPUT/<variant>.json`` as soon as they exist; variants already written
are skipped, so an interrupted run resumes. ``OUTPUT/summary.md`` tabulates all of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from rmu import keywords
from rmu.attacks.common import accuracy, mean
from rmu.attacks.keywords import DEFAULT_TEMPLATE, HELD_OUT_TEMPLATES, insert_keywords, read_keywords
from rmu.demo.benchmark import build_benchmark, write_benchmark
from rmu.demo.model import smollm2_path
from rmu.demo.settings import DEFAULT as DEMO
from rmu.engine import unlearn
from rmu.loading import load_model
from rmu.tasks import load_task_file

# name -> options added to the demo's unlearning settings (None: the base model)
# "+kr": --keyword-robust as first measured, every token held (--no-keyword-mask; the default until
# 2026-11-30); "+kr-mask": the inserted sentence's tokens left out of the retain loss (today's default).
KR = {"keyword_robust": True, "keyword_mask": False}
ROBUST = {"method": "adaptive", "keyword_robust": True}  # Adaptive RMU with today's --keyword-robust (the mask)
BEFORE_INSIDE = {"keyword_positions": ("before", "inside")}
FOCUS = {"keyword_forget_focus": True}
VARIANTS = {
    "base": None,
    "rmu": {"method": "rmu"},
    "adaptive": {"method": "adaptive"},
    "rmu+kr": {"method": "rmu"} | KR,
    "adaptive+kr": {"method": "adaptive"} | KR,
    # candidates measured on the way (docs/robustness.md): neutral sentences only, and their share
    "rmu+kr-neutral": {"method": "rmu", "templates": "neutral"} | KR,
    "adaptive+kr-neutral": {"method": "adaptive", "templates": "neutral"} | KR,
    "adaptive+kr-neutral1.0": {"method": "adaptive", "keyword_fraction": 1.0, "templates": "neutral"} | KR,
    "rmu+kr0.25": {"method": "rmu", "keyword_fraction": 0.25} | KR,
    # --keyword-mask: the retain loss leaves out the inserted sentence's own tokens (issue #12, animals)
    "adaptive+kr-mask": ROBUST | {"keyword_mask": True},
    "adaptive+kr-mask-neutral": ROBUST | {"keyword_mask": True, "templates": "neutral"},
    "adaptive+kr-mask0.25": ROBUST | {"keyword_mask": True, "keyword_fraction": 0.25},
    "rmu+kr-mask": {"method": "rmu", "keyword_robust": True, "keyword_mask": True},
    # the animals topic's forgetting (issue #12, kwpos): sentences before/inside only, a window after them
    "adaptive+kr-mask-bi": ROBUST | BEFORE_INSIDE,
    "adaptive+kr-mask-w8": ROBUST | {"keyword_window": 8},
    "adaptive+kr-mask-b": ROBUST | {"keyword_positions": ("before",)},
    "adaptive+kr-mask-i": ROBUST | {"keyword_positions": ("inside",)},
    "adaptive+kr-mask-f": ROBUST | FOCUS,
    "adaptive+kr-mask-bi-f": ROBUST | BEFORE_INSIDE | FOCUS,
    "adaptive+kr-mask-i-f": ROBUST | {"keyword_positions": ("inside",)} | FOCUS,
    "adaptive+kr-mask-rw0.3": ROBUST | {"keyword_retain_weight": 0.3},
    "adaptive+kr-mask-bi-f-rw0.3": ROBUST | BEFORE_INSIDE | FOCUS | {"keyword_retain_weight": 0.3},
    "adaptive+kr-mask-bi-f0.25": ROBUST | BEFORE_INSIDE | FOCUS | {"keyword_fraction": 0.25},
    "adaptive+kr-mask-bi-w8": ROBUST | BEFORE_INSIDE | {"keyword_window": 8},
    # the attention weights of the updated layers trained too (issue #12: telling "this sentence is about
    # an animal" from "an animal was named before" is attention's work; the published method trains the MLP)
    "adaptive-attn": {"method": "adaptive", "params": ["mlp-out", "attn"]},
    "adaptive-attn+kr-mask": ROBUST | {"params": ["mlp-out", "attn"]},
    "adaptive-attn+kr-mask-f": ROBUST | FOCUS | {"params": ["mlp-out", "attn"]},
    "adaptive-per-sample": {"method": "adaptive", "adaptive_rule": "per-sample"},
    "adaptive-per-sample+kr": {"method": "adaptive", "adaptive_rule": "per-sample"} | KR,
}
# (template, position) pairs of the measurement; none is a training template (rmu.keywords).
# Four variants of 90 questions keep a model's measurement to minutes on a shared CPU.
EVAL_VARIANTS = (
    (DEFAULT_TEMPLATE, "before"),
    (HELD_OUT_TEMPLATES[0], "before"),
    (HELD_OUT_TEMPLATES[1], "before"),
    (HELD_OUT_TEMPLATES[2], "inside"),
)


def measure(model, tokenizer, tasks: dict, keyword_sets: dict, scoring: str, eval_variants=EVAL_VARIANTS) -> dict:
    scores = {role: accuracy(model, tokenizer, task, scoring) for role, task in tasks.items()}
    for label, attack_words in keyword_sets.items():
        variants = []
        for template, position in eval_variants:
            task = insert_keywords(tasks["retain"], attack_words, template, seed=0, position=position)
            value = accuracy(model, tokenizer, task, scoring)
            variants.append({"template": template, "position": position, "retain_with_keyword": value,
                             "drop": scores["retain"] - value})
        scores[f"keywords_{label}"] = {"retain_with_keyword": mean(v["retain_with_keyword"] for v in variants),
                                       "drop": mean(v["drop"] for v in variants), "variants": variants}
    return scores


def run(output: str | Path, names: list[str] | None = None, model_dir: str | Path | None = None,
        steps: int | None = None, limit: int | None = None, unseen: bool = False, progress: bool = True,
        data: str | Path | None = None, attack_keywords: str | Path | None = None,
        topic_template: str | None = None, train_keywords: str | Path | None = None, seed: int | None = None,
        lr: float | None = None) -> dict:
    """Unlearn and measure each variant of ``names`` (default all); ``steps``, ``limit``: shorter runs (tests).

    ``unseen``: measure the keyword drop a second time with element names the corpora never mention.
    ``data``: another topic's folder (forget.jsonl, retain.jsonl, forget_questions.jsonl,
    retain_questions.jsonl) instead of the demo benchmark, with ``attack_keywords`` (a file, one a line)
    and ``topic_template`` (the topic's own sentence, in place of "{keyword} is a chemical element.").
    ``train_keywords``: a keyword file for the ``--keyword-robust`` variants instead of the extraction.
    ``seed``: the unlearning seed (control vector, augmentation draws) instead of the demo's.
    ``lr``: every variant's learning rate instead of the demo's (a larger budget than the demo's one pass).
    """
    torch.set_num_threads(1)
    settings = dataclasses.replace(DEMO, steps=steps or DEMO.steps, seed=DEMO.seed if seed is None else seed,
                                   lr=lr or DEMO.lr)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    folder = Path(model_dir) if model_dir else smollm2_path(progress=progress)
    if data is None:
        benchmark = build_benchmark(seed=0)
        paths = write_benchmark(output / "data", benchmark)
        keyword_sets = {"taught": benchmark.forget_taught} | ({"unseen": benchmark.forget_held_out} if unseen else {})
    else:
        names_in = ("forget_corpus", "retain_corpus", "forget_questions", "retain_questions")
        paths = dict(zip(names_in, (Path(data) / f for f in ("forget.jsonl", "retain.jsonl", "forget_questions.jsonl",
                                                              "retain_questions.jsonl"))))
        keyword_sets = {"taught": read_keywords(attack_keywords)}
    eval_variants = ((topic_template or DEFAULT_TEMPLATE, "before"), *EVAL_VARIANTS[1:])
    tasks = {"forget": load_task_file(paths["forget_questions"], name="forget_questions").head(limit),
             "retain": load_task_file(paths["retain_questions"], name="retain_questions").head(limit)}
    model, tokenizer = load_model(folder)
    results = {}
    for name in names or list(VARIANTS):
        path = output / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
            continue
        options = VARIANTS[name]
        started = time.perf_counter()
        entry: dict = {"options": options}
        if options is not None:
            options = dict(options)
            neutral_only = options.pop("templates", None) == "neutral"
            if options.get("keyword_robust") and train_keywords:
                options["keywords"] = str(train_keywords)
            templates = keywords.NEUTRAL_TEMPLATES if neutral_only else keywords.TRAINING_TEMPLATES
            config = settings.unlearn_config(folder, {"elements": str(paths["forget_corpus"])},
                                             [str(paths["retain_corpus"])], **options)
            original_templates, keywords.TRAINING_TEMPLATES = keywords.TRAINING_TEMPLATES, templates
            try:
                result = unlearn(config, model=model, tokenizer=tokenizer, progress=progress)
            finally:
                keywords.TRAINING_TEMPLATES = original_templates
            entry |= {"coefficients": result.coefficients, "final_forget_loss": result.records[-1]["forget_loss"],
                      "final_retain_loss": result.records[-1]["retain_loss"], "unlearn_seconds": round(result.seconds, 1),
                      "keywords_used": len(result.keywords["keywords"]) if result.keywords else 0}
        entry |= measure(model, tokenizer, tasks, keyword_sets, settings.scoring, eval_variants)
        if options is not None:
            result.restore_original()
        entry["seconds"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(entry, indent=2))
        results[name] = entry
        print(f"[{name}] forget {entry['forget']:.3f} retain {entry['retain']:.3f} "
              f"keyword drop {entry['keywords_taught']['drop']:.3f} ({entry['seconds']:.0f} s)", flush=True)
    (output / "settings.json").write_text(json.dumps(
        {"demo": dataclasses.asdict(DEMO), "steps": settings.steps, "seed": settings.seed, "lr": settings.lr,
         "limit": limit,
         "eval_variants": eval_variants,
         "data": str(data) if data else None,
         "model": str(folder)},
        indent=2))
    (output / "summary.md").write_text(summary(results, eval_variants))
    return results


def summary(results: dict, eval_variants=EVAL_VARIANTS) -> str:
    base = results.get("base")
    templates = [f"{p}: {t}" for t, p in eval_variants]
    lines = ["| model | forget | retain | with keyword (mean) | drop | base drop | "
             + " | ".join(f"drop, {t}" for t in templates) + " | drop, unseen names |",
             "|---" * (7 + len(templates)) + "|"]
    for name, entry in results.items():
        taught, unseen = entry["keywords_taught"], entry.get("keywords_unseen")
        base_drop = f"{base['keywords_taught']['drop']:.3f}" if base else "-"
        lines.append(f"| {name} | {entry['forget']:.3f} | {entry['retain']:.3f} | {taught['retain_with_keyword']:.3f} | "
                     f"{taught['drop']:.3f} | {base_drop} | "
                     + " | ".join(f"{v['drop']:.3f}" for v in taught["variants"])
                     + (f" | {unseen['drop']:.3f} |" if unseen else " | - |"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """The command line of ``python -m rmu.demo.keyword_robustness`` (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("variants", nargs="*", help=f"some of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--model-dir")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--unseen", action="store_true", help="also measure with element names never in the corpora")
    parser.add_argument("--data", help="another topic's folder of corpora and questions (default: the demo benchmark)")
    parser.add_argument("--attack-keywords", help="with --data: the attack's keywords, one a line")
    parser.add_argument("--topic-template", help="with --data: the topic's own keyword sentence")
    parser.add_argument("--train-keywords", help="--keyword-robust variants: this keyword file, not the extraction")
    parser.add_argument("--seed", type=int, help=f"unlearning seed (default the demo's, {DEMO.seed})")
    parser.add_argument("--lr", type=float, help=f"every variant's learning rate (default the demo's, {DEMO.lr})")
    arguments = parser.parse_args(argv)
    unknown = [v for v in arguments.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    run(arguments.output, arguments.variants or None, arguments.model_dir, arguments.steps, unseen=arguments.unseen,
        data=arguments.data, attack_keywords=arguments.attack_keywords, topic_template=arguments.topic_template,
        train_keywords=arguments.train_keywords, seed=arguments.seed, lr=arguments.lr)


if __name__ == "__main__":
    main()
