"""rmu.demo.keyword_robustness: the measurement behind docs/robustness.md's keyword section, and its
old path rmu.attacks.keyword_robust_demo."""

from __future__ import annotations

import subprocess
import sys

from rmu.demo.keyword_robustness import EVAL_VARIANTS, run
from rmu.testing import save_tiny_model


def test_measurement_script_runs_on_a_tiny_model(tmp_path):
    """The script behind docs/robustness.md's keyword section, with tiny budgets."""
    model_dir = save_tiny_model(tmp_path / "tiny", num_layers=8)
    results = run(tmp_path / "out", ["base", "adaptive+kr"], model_dir=model_dir, steps=2, limit=6, progress=False)
    entry = results["adaptive+kr"]
    assert entry["keywords_used"] > 50  # element names and chemistry words of the demo corpus
    assert len(entry["keywords_taught"]["variants"]) == len(EVAL_VARIANTS)
    assert (tmp_path / "out" / "summary.md").read_text().count("\n") == 4
    again = run(tmp_path / "out", ["base", "adaptive+kr"], model_dir=model_dir, steps=2, limit=6, progress=False)
    assert again == results  # measured variants are read back, not rerun


def test_old_module_path_still_runs_and_says_where_it_moved():
    import rmu.attacks.keyword_robust_demo as old

    assert old.run is run
    done = subprocess.run([sys.executable, "-m", "rmu.attacks.keyword_robust_demo", "--help"],
                          capture_output=True, text=True, check=True)
    assert "moved to rmu.demo.keyword_robustness" in done.stderr and "adaptive+kr" in done.stdout
