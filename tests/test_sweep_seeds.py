"""rmu sweep --seeds K: every point on K seeds, mean and std in sweep.json and the table, error bars drawn."""

from __future__ import annotations

import json
import statistics

import pytest
from click.testing import CliRunner

from conftest import write_workspace
from rmu import plots
from rmu.analysis import sweep_layers
from rmu.cli import main
from rmu.cli.sweep import command as sweep_command
from rmu.testing import tiny_model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return write_workspace(tmp_path_factory.mktemp("seeds"), "elements", layers=4, lines=8, questions=4)


def test_coeff_sweep_on_two_seeds_reports_mean_and_std(workspace, tmp_path):
    out = tmp_path / "coeff"
    args = ["coeff", "--values", "2,20", "--model", str(workspace / "model"), "--forget", f"f={workspace / 'forget.jsonl'}",
            "--retain", str(workspace / "retain.txt"), "--layer", "2", "--steps", "3", "--batch-size", "2",
            "--min-len", "0", "--max-len", "32", "--lr", "1e-2", "--seed", "7", "--device", "cpu",
            "--forget-task", str(workspace / "questions.jsonl"), "--retain-task", str(workspace / "questions.jsonl"),
            "--scoring", "completion", "--seeds", "2", "--output", str(out), "--quiet"]
    result = CliRunner().invoke(sweep_command, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "sweep.json").read_text())
    assert data["settings"]["seeds"] == 2
    for point in data["points"]:
        runs = point["seeds"]
        assert [r["seed"] for r in runs] == [7, 8]
        for name in ("forget_accuracy", "retain_accuracy", "cosine"):
            values = [r[name] for r in runs]
            assert point[name] == pytest.approx(statistics.fmean(values))
            assert point[f"{name}_std"] == pytest.approx(statistics.stdev(values))
        # Different seeds, different control vectors: the cosine with u differs between the runs.
        assert runs[0]["cosine"] != runs[1]["cosine"]
        assert (out / "runs" / f"rmu_steering_coeff{point['value']:g}_seed8" / "run.json").is_file()
    assert "+-" in (out / "table.md").read_text()
    figure = plots.plot_coeff_sweep(data)
    bars = [c for c in figure.axes[0].containers if getattr(c, "has_yerr", False)]
    assert len(bars) == 2  # forget and retain, each with error bars
    # A rerun with another number of seeds is a different sweep.
    again = CliRunner().invoke(main, ["sweep", *[a if a != "2" or i != args.index("--seeds") + 1 else "3"
                                                 for i, a in enumerate(args)]])
    assert again.exit_code != 0 and "seeds" in again.output


def test_layer_sweep_with_one_seed_is_unchanged(workspace, tmp_path):
    model, tokenizer = tiny_model("llama", num_layers=4)
    base = dict(model=str(workspace / "model"), forget={"f": str(workspace / "forget.jsonl")},
                retain=[str(workspace / "retain.txt")], steps=2, batch_size=2, min_len=0, max_len=32, device="cpu")
    data = sweep_layers(base, [2], tmp_path / "l", forget_tasks=[workspace / "questions.jsonl"],
                        retain_tasks=[workspace / "questions.jsonl"], methods=["rmu"], model=model, tokenizer=tokenizer,
                        progress=False, plot=False)
    assert "seeds" not in data["settings"] and "seeds" not in data["points"][0]
    assert "forget_accuracy_std" not in data["points"][0]
    two = sweep_layers(base, [2], tmp_path / "l2", forget_tasks=[workspace / "questions.jsonl"],
                       retain_tasks=[workspace / "questions.jsonl"], methods=["rmu"], model=model, tokenizer=tokenizer,
                       progress=False, seeds=2)
    assert len(two["points"][0]["seeds"]) == 2 and "forget_accuracy_std" in two["points"][0]


def test_the_layer_plot_draws_the_std_over_seeds_as_error_bars():
    points = [{"method": "rmu", "layer": layer, "forget_accuracy": forget, "forget_accuracy_std": forget_std,
               "retain_accuracy": 0.8, "retain_accuracy_std": 0.02}
              for layer, forget, forget_std in ((4, 0.3, 0.1), (2, 0.5, 0.05))]
    data = {"settings": {"methods": ["rmu"]}, "points": points, "baseline": {"forget_accuracy": 0.8}}

    def half_heights(figure):
        return [[(segment[1, 1] - segment[0, 1]) / 2 for segment in ax.containers[0].lines[2][0].get_segments()]
                for ax in figure.axes]

    assert half_heights(plots.plot_layer_sweep(data)) == [pytest.approx([0.05, 0.1]), pytest.approx([0.02, 0.02])]
    one_seed = {**data, "points": [{k: v for k, v in p.items() if not k.endswith("_std")} for p in points]}
    assert all(not ax.containers[0].has_yerr for ax in plots.plot_layer_sweep(one_seed).axes)
