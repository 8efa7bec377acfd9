"""The demo pipeline end to end on a tiny model: report files and well-formed numbers; the ``rmu demo``
command that calls it."""

from __future__ import annotations

import json
import math

from click.testing import CliRunner

from rmu.cli import main
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


def test_demo_command_passes_model_and_topic(monkeypatch):
    import rmu.demo.run as run

    calls = []

    def fake_run_demo(output, **kwargs):
        calls.append(kwargs)
        return {"models": {"base": {"forget_accuracy": 0.9, "retain_accuracy": 0.9, "general_perplexity": 9.0}},
                "chance": 0.25}

    monkeypatch.setattr(run, "run_demo", fake_run_demo)
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--quiet"]).exit_code == 0
    assert calls[-1]["model"] == "smollm2" and calls[-1]["topic"] == "elements"
    assert calls[-1]["settings"] == run.DEFAULT
    result = runner.invoke(main, ["demo", "--model", "gemma3-270m", "--topic", "animals", "--quick", "--quiet"])
    assert result.exit_code == 0, result.output
    assert calls[-1]["model"] == "gemma3-270m" and calls[-1]["topic"] == "animals"
    assert calls[-1]["settings"] == run.QUICK
    bad = runner.invoke(main, ["demo", "--model", "llama"])
    assert bad.exit_code == 2 and "gemma3-270m" in bad.output and len(calls) == 2


def test_demo_data_only_writes_the_topic_files(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--topic", "animals", "--data-only", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names == ["forget.jsonl", "forget_questions.jsonl", "general.txt", "retain.jsonl", "retain_questions.jsonl"]
    assert "A " in (tmp_path / "data" / "forget_questions.jsonl").read_text()
