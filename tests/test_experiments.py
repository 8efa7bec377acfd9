"""rmu.experiments: the one shape of every experiment, its generated options, the registry, the report."""

import json
from typing import Literal

import click
import pytest
from click.testing import CliRunner
from pydantic import Field

from rmu.cli import main
from rmu.cli.experiments import experiment_command, settings_from_options, settings_options
from rmu.experiments import Experiment, ExperimentError, NamedModels, Settings, Table
from rmu.experiments.values import FloatList, NameList, OptionalIntList
from rmu.experiments.registry import EXPERIMENTS, results_in
from rmu.report import build_report


class ToySettings(Settings):
    models: NamedModels = Field(description="Models.", json_schema_extra={"cli": "--model", "metavar": "NAME=PATH",
                                                                          "path": "dir"})
    count: int = Field(3, ge=1, description="How many.")
    scale: float = Field(0.5, gt=0, le=1, description="A fraction.")
    mode: Literal["a", "b"] = Field("a", description="Which mode.")
    fast: bool = Field(False, description="Go fast.")
    tags: list[str] = Field(default_factory=list, description="Tags (repeat).", json_schema_extra={"cli": "--tag"})
    limit: int | None = Field(None, ge=1, description="Optional limit.")
    secret: str = Field("x", description="Python only.", json_schema_extra={"cli": None})


class Toy(Experiment):
    """A toy experiment: echoes its settings."""

    kind = "toy"
    title = "Toy"
    command = "toy"
    settings = ToySettings

    def compute(self, settings, progress=True, **inputs):
        return {"values": [settings.scale * i for i in range(settings.count)], "inputs": sorted(inputs)}

    def figures(self, data):
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots()
        ax.plot(data["values"])
        return {"toy.png": figure}

    def tables(self, data):
        return [Table(["i", "value"], [[i, v] for i, v in enumerate(data["values"])])]

    def summary(self, data):
        return [f"{len(data['values'])} values"]


def test_options_follow_the_settings(tmp_path):
    command = experiment_command(Toy(), "toy")
    options = {p.name: p for p in command.params}
    assert options["models"].opts == ["--model"] and options["models"].multiple and options["models"].required
    assert isinstance(options["count"].type, click.IntRange) and options["count"].type.min == 1
    assert options["count"].default == 3 and options["count"].help == "How many."
    assert options["scale"].type.min_open and options["scale"].type.max == 1
    assert options["mode"].type.choices == ("a", "b") if isinstance(options["mode"].type.choices, tuple) \
        else list(options["mode"].type.choices) == ["a", "b"]
    assert options["fast"].is_flag and options["fast"].secondary_opts == ["--no-fast"]
    assert options["tags"].opts == ["--tag"] and options["tags"].multiple
    assert options["limit"].default is None and not options["limit"].required
    assert "secret" not in options and {"output", "quiet", "no_plot"} <= set(options)


def test_a_generated_command_runs_saves_and_reports(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(experiment_command(Toy(), "toy"), ["--model", f"m={model}", "--count", "2",
                                                                   "--mode", "b", "--tag", "x", "--tag", "y",
                                                                   "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 values" in result.output and "toy.json written to" in result.output
    data = json.loads((out / "toy.json").read_text())
    assert data["kind"] == "toy" and data["values"] == [0.0, 0.5]
    assert data["settings"] == {"models": {"m": str(model)}, "count": 2, "scale": 0.5, "mode": "b", "fast": False,
                                "tags": ["x", "y"], "limit": None, "secret": "x"}
    assert (out / "toy.png").stat().st_size > 0 and (out / ".rmu-output.json").is_file()
    # rmu.outputs' rule: a folder rmu wrote may be written again; a folder holding the user's files may not.
    again = CliRunner().invoke(experiment_command(Toy(), "toy"), ["--model", str(model), "--output", str(out),
                                                                  "--no-plot"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "toy.json").read_text())["settings"]["models"] == {"model": str(model)}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = CliRunner().invoke(experiment_command(Toy(), "toy"), ["--model", str(model), "--output", str(mine)])
    assert refused.exit_code != 0 and "holds files rmu did not write" in str(refused.exception)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_settings_errors_name_the_setting(tmp_path):
    with pytest.raises(ExperimentError, match=r"count: Input should be greater than or equal to 1 \(got 0\)"):
        ToySettings.parse(models={"m": str(tmp_path)}, count=0)
    with pytest.raises(ExperimentError, match="is not a checkpoint folder"):
        ToySettings.parse(models=[f"m={tmp_path / 'nowhere'}"])
    with pytest.raises(ExperimentError, match="given twice"):
        ToySettings.parse(models=[f"m={tmp_path}", f"m={tmp_path}"])
    with pytest.raises(ExperimentError, match="at least one model"):
        ToySettings.parse(models=[])
    with pytest.raises(ExperimentError, match="Extra inputs are not permitted"):
        ToySettings.parse(models={"m": str(tmp_path)}, unknown=1)


def test_a_bare_path_is_named_after_its_folder(tmp_path):
    assert ToySettings.parse(models=[str(tmp_path)]).models == {tmp_path.name: str(tmp_path)}


def test_every_registered_experiment_has_the_shape():
    kinds = [e.kind for e in EXPERIMENTS]
    assert len(kinds) == len(set(kinds))
    for experiment in EXPERIMENTS:
        assert experiment.title and experiment.command and issubclass(experiment.settings, Settings)
        assert experiment.result_file().endswith(".json")


def test_report_renders_an_experiment_from_its_data(workspace, tmp_path):
    out = tmp_path / "norms"
    result = CliRunner().invoke(main, ["analyze", "token-norms", "--model", f"base={workspace / 'model'}",
                                       "--texts", str(workspace / "bio.jsonl"), "--batches", "1",
                                       "--output", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    [(experiment, data)] = results_in(out)
    assert experiment.kind == "token_norms"
    page = build_report([out], tmp_path / "report")["markdown"].read_text()
    first = data["models"]["base"]["layers"][0]
    assert "## Token norms: norms" in page and f"| base | 0 | {first['median']:.4g} |" in page
    assert "token_norms.png" in page


def test_a_wrong_option_value_is_one_line_through_the_group(workspace, tmp_path):
    result = CliRunner().invoke(main, ["analyze", "token-norms", "--model", f"base={tmp_path / 'none'}",
                                       "--texts", str(workspace / "bio.jsonl"), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "is not a checkpoint folder" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


class ParsedSettings(Settings):
    runs: list[str] = Field(description="Result folders.", json_schema_extra={"argument": True, "path": "any",
                                                                              "results": True})
    layers: OptionalIntList = Field(None, description="Layers.")
    values: FloatList = Field([1.0, 2.5], description="Values.")
    methods: NameList = Field(["rmu", "adaptive"], description="Methods.")


def test_a_setting_written_as_one_text_is_one_option_that_its_validator_parses(tmp_path):
    options = {p.name: p for p in settings_options(ParsedSettings)(click.command("x")(lambda **v: None)).params}
    assert options["runs"].param_type_name == "argument" and options["runs"].nargs == -1
    for name in ("layers", "values", "methods"):
        assert not options[name].multiple and options[name].type == click.STRING
    assert options["values"].default == "1.0,2.5" and options["methods"].default == "rmu,adaptive"
    assert options["layers"].default is None
    seen = {}
    command = click.command("x")(settings_options(ParsedSettings)(lambda **v: seen.update(
        settings=settings_from_options(ParsedSettings, v))))
    result = CliRunner().invoke(command, [str(tmp_path), "--layers", "3,5-9:2", "--values", "0.5,4"],
                                standalone_mode=False)
    assert result.exception is None, result.output
    settings = seen["settings"]
    assert settings.layers == [3, 5, 7, 9] and settings.values == [0.5, 4.0] and settings.methods == ["rmu", "adaptive"]
    assert settings.input_paths("results") == [tmp_path] and settings.runs == [str(tmp_path)]
    assert ParsedSettings.parse(runs=["r"], layers=[1, 2]).layers == [1, 2]  # a list from Python passes as it is
    with pytest.raises(ExperimentError, match=r"layers: Value error, '5-2': use a list \(3,6,9\), a range"):
        ParsedSettings.parse(runs=["r"], layers="5-2")
    with pytest.raises(ExperimentError, match="values: Value error, 'a,b': give comma-separated numbers"):
        ParsedSettings.parse(runs=["r"], values="a,b")
