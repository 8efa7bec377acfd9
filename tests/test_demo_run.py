"""The demo pipeline end to end on a tiny model: report files and well-formed numbers."""

from __future__ import annotations

import json
import math

from rmu.demo.run import DemoSettings, run_demo
from rmu.testing import save_tiny_model


def test_demo_pipeline_writes_a_consistent_report(tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny", "llama", num_layers=4)
    settings = DemoSettings(layer=2, steps=4, max_len=32, lr=1e-3, question_limit=6)
    results = run_demo(tmp_path / "report", settings=settings, model_dir=model_dir, progress=False)

    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert list(saved["models"]) == ["base", "rmu", "adaptive"]
    assert saved["questions"] == {"forget": 6, "retain": 6}
    for scores in saved["models"].values():
        assert 0 <= scores["forget_accuracy"] <= 1 and 0 <= scores["retain_accuracy"] <= 1
        assert math.isfinite(scores["general_perplexity"]) and scores["general_perplexity"] > 1
    for method in ("rmu", "adaptive"):
        run = json.loads((tmp_path / "report" / f"run_{method}.json").read_text())
        assert len(run["steps"]) == 4 and run["config"]["method"] == method
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| Adaptive RMU | {saved['models']['adaptive']['forget_accuracy']:.3f} |" in report
    assert (tmp_path / "report" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_pipeline_on_the_second_topic_with_an_extra_measure(tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny", "llama", num_layers=4)
    settings = DemoSettings(layer=2, steps=2, max_len=32, lr=1e-3, question_limit=4)
    seen = []

    def extra(model, tokenizer, benchmark):
        seen.append(benchmark.forget_taught[0])
        return {"extra_score": 0.5}

    results = run_demo(tmp_path / "report", settings=settings, model_dir=model_dir, progress=False,
                       topic="animals", extra_measure=extra, methods=("adaptive",))
    assert results["topic"]["name"] == "animals" and len(seen) == 2
    assert list(results["models"]) == ["base", "adaptive"]
    assert not (tmp_path / "report" / "results.partial.json").exists()  # only while the run is going
    assert all(scores["extra_score"] == 0.5 for scores in results["models"].values())
    run = json.loads((tmp_path / "report" / "run_adaptive.json").read_text())
    assert list(run["config"]["forget"]) == ["animals"]
    assert "kinds of animals" in (tmp_path / "report" / "report.md").read_text()
