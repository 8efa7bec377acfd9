"""Perplexity of the base model and of ``rmu tune``'s best settings on a text file (one process).

``python benchmarks/best_perplexity.py DIR/best.yaml general.txt``: loads the model of best.yaml,
prints its perplexity on the file (one text a line), unlearns with best.yaml in memory and prints it
again. For studies run without ``--general-text`` (docs/tuning.md).
"""
import sys, yaml
from rmu.config import make_config
from rmu.engine import unlearn
from rmu.eval import perplexity
from rmu.experiments.base import load_full_model

best = yaml.safe_load(open(sys.argv[1]))
texts = [l.strip() for l in open(sys.argv[2]) if l.strip()]
model, tokenizer = load_full_model(best["model"])
print("base perplexity", perplexity(model, tokenizer, texts, progress=False))
unlearn(make_config(best), model=model, tokenizer=tokenizer, progress=False)
print("best perplexity", perplexity(model, tokenizer, texts, progress=False))
