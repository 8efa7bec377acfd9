"""rmu.demo.robustness: the driver behind docs/robustness.md, and its old path rmu.attacks.robustness_demo."""

from __future__ import annotations

import json
import subprocess
import sys

from rmu.demo.robustness import Settings, run
from rmu.demo.settings import DEFAULT
from rmu.testing import save_tiny_model


def test_robustness_demo_runs_every_stage_on_a_tiny_model(tmp_path):
    """The script behind docs/robustness.md, with tiny budgets: every stage writes well-formed results."""
    model_dir = save_tiny_model(tmp_path / "tiny", "llama", num_layers=4)
    settings = Settings(layer=2, steps=2, lr=1e-3, alpha=10.0, gcg_questions=2, gcg_steps=1, gcg_candidates=4,
                        gcg_tokens=2, relearn_k=2, relearn_steps=2, relearn_eval_every=1, relearn_questions=4,
                        ablate_questions=4)
    timings = run(tmp_path / "out", settings, progress=False, model_dir=model_dir)
    for stage in ("scores", "keywords", "probe", "ablate", "relearn", "gcg"):
        assert stage in timings
    scores = json.loads((tmp_path / "out" / "scores" / "scores.json").read_text())
    assert set(scores) == {"base", "rmu", "adaptive", "rmu+noise", "adaptive+noise"}
    assert all(0 <= v <= 1 for entry in scores.values() for v in entry.values())
    gcg = json.loads((tmp_path / "out" / "gcg" / "gcg.json").read_text())
    assert gcg["settings"]["scoring"] == "completion" and set(gcg["models"]) == {"base", "rmu", "adaptive"}
    settings_file = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert settings_file["settings"]["mask_padding"] is True  # the demo's unlearning settings


def test_settings_extend_the_demo_settings():
    """The attacks' unlearning settings are the demo's own, not a copy that can drift."""
    settings = Settings()
    assert all(getattr(settings, name) == value for name, value in vars(DEFAULT).items())


def test_old_module_path_still_runs_and_says_where_it_moved():
    import rmu.attacks.robustness_demo as old

    assert old.run is run and old.Settings is Settings
    done = subprocess.run([sys.executable, "-c", "import runpy, sys; sys.argv = ['x']; "
                           "import rmu.demo.robustness as new; new.run = lambda output: print('ran', output); "
                           "runpy.run_module('rmu.attacks.robustness_demo', run_name='__main__')"],
                          capture_output=True, text=True, check=True)
    assert "moved to rmu.demo.robustness" in done.stderr and "ran robustness-results" in done.stdout
