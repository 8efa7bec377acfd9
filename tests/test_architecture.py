"""docs/architecture.md's worked example runs as written: a new attack in the one experiment shape."""

import json
import re
from pathlib import Path

from click.testing import CliRunner

from rmu.cli.experiments import experiment_command
from rmu.report import sections_of

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def example() -> dict:
    [code] = [block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "class Prefix(" in block]
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the documentation's own example
    return namespace


def test_the_worked_example_is_a_working_experiment(workspace, tmp_path):
    namespace = example()
    prefix = namespace["Prefix"]()
    command = experiment_command(prefix, "prefix")
    options = {p.name for p in command.params}
    assert {"models", "questions", "limit", "prefix", "scoring", "output", "quiet", "no_plot"} <= options
    out = tmp_path / "prefix-out"
    result = CliRunner().invoke(command, ["--model", f"base={workspace / 'model'}", "--questions",
                                          str(workspace / "questions.jsonl"), "--prefix", "Think.", "--output",
                                          str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "prefix.json").read_text())
    assert data["kind"] == "prefix" and data["settings"]["prefix"] == "Think."
    entry = data["models"]["base"]
    assert f"base: {entry['plain']:.3f} -> {entry['prefixed']:.3f}" in result.output
    # The report shows it once the experiment is registered (done here as the page says).
    from rmu.experiments import registry

    registry.BY_KIND["prefix"] = prefix
    try:
        [section] = sections_of(out)
    finally:
        del registry.BY_KIND["prefix"]
    assert section.title == "Prefix attack: prefix-out" and section.tables[0].rows == [["base", entry["plain"],
                                                                                         entry["prefixed"]]]


def test_the_worked_example_python_api(workspace):
    from rmu.testing import tiny_model

    namespace = example()
    model, tokenizer = tiny_model("llama", num_layers=2, seed=0)
    data = namespace["prefix_attack"]({"m": (model, tokenizer)}, str(workspace / "questions.jsonl"))
    assert data["settings"]["models"] == {"m": "in memory"} and set(data["models"]["m"]) == {"plain", "prefixed"}
