"""The attacks of ``rmu attack`` on tiny offline models: numbers, invariances, CLI, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from rmu.attacks import (AttackError, ablate_attack, gcg_attack, gcg_question, insert_keywords, keyword_attack,
                         probe_accuracy, probe_attack, project_out, projection_hook, relearn_attack)
from rmu.attacks.gcg import make_layout, suffix_losses
from rmu.attacks.keywords import DEFAULT_TEMPLATE, HELD_OUT_TEMPLATES, place_sentence
from rmu.evaluate import evaluate
from rmu.tasks import Question, Task
from rmu.testing import save_tiny_model, tiny_model

torch.set_num_threads(1)

CHOICES = ("one", "two", "three", "four")


def tiny_task(n: int = 8, name: str = "tiny") -> Task:
    return Task(name, [Question(f"Question {i} about the symbol?", CHOICES, i % 4, "chemistry") for i in range(n)])


def write_questions(path, task: Task):
    path.write_text("".join(json.dumps({"question": q.question, "choices": list(q.choices), "answer": q.answer,
                                        "subject": q.subject}) + "\n" for q in task.questions))
    return path


# --------------------------------------------------------------------------------------------- GCG


def direct_loss(model, tokenizer, question, suffix, scoring="letter"):
    """The loss recomputed independently: one forward pass over the whole token sequence."""
    layout = make_layout(tokenizer, question, scoring)
    ids = torch.tensor([layout.before + suffix + layout.after + layout.target])
    with torch.no_grad():
        log_probs = F.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    n = len(layout.target)
    positions = range(ids.shape[1] - n - 1, ids.shape[1] - 1)
    return -sum(float(log_probs[p, t]) for p, t in zip(positions, layout.target))


def test_gcg_lowers_the_loss_and_the_reported_loss_is_exact(tiny):
    model, tokenizer = tiny
    question = tiny_task().questions[1]
    record = gcg_question(model, tokenizer, question, n_tokens=6, steps=8, candidates=32, top_k=16, seed=0)
    assert record["loss_curve"][0] == pytest.approx(record["initial_loss"])
    assert len(record["loss_curve"]) == 9
    assert record["best_loss"] < record["initial_loss"]
    assert record["best_loss"] == pytest.approx(min(record["loss_curve"]), abs=1e-6)
    assert record["best_loss"] == pytest.approx(direct_loss(model, tokenizer, question, record["suffix_ids"]), abs=1e-4)
    initial = [tokenizer(" !", add_special_tokens=False)["input_ids"][-1]] * 6
    assert record["initial_loss"] == pytest.approx(direct_loss(model, tokenizer, question, initial), abs=1e-4)
    # the suffix can be written as text: it re-tokenises into the same tokens
    assert tokenizer(record["suffix_text"], add_special_tokens=False)["input_ids"] == record["suffix_ids"]
    assert not any(p.requires_grad is False for p in model.parameters())  # flags restored


def test_gcg_steers_a_model_whose_answer_is_learnable():
    """A model trained briefly to answer from a trigger token: GCG finds a suffix that flips the answer."""
    model, tokenizer = tiny_model(seed=1)
    question = Question("Which?", CHOICES, 2, "")
    layout = make_layout(tokenizer, question)
    trigger = tokenizer("x", add_special_tokens=False)["input_ids"][0]
    filler = tokenizer(" !", add_special_tokens=False)["input_ids"][-1]
    # Teach: with the trigger anywhere in the 3-token suffix the answer is C; without it, A.
    suffixes = [[trigger if i == position else filler for i in range(3)] for position in range(3)] + [[filler] * 3] * 3
    choices = [2, 2, 2, 0, 0, 0]
    ids = torch.tensor([layout.ids(suffix, choice) for suffix, choice in zip(suffixes, choices)])
    targets = torch.tensor([layout.continuations[choice] for choice in choices])
    n = targets.shape[1]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        optimizer.zero_grad()
        logits = model(input_ids=ids).logits[:, -n:]
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
        optimizer.step()
    model.eval()
    record = gcg_question(model, tokenizer, question, n_tokens=3, steps=6, candidates=64, top_k=32, seed=0)
    assert not record["token_correct_initial"]
    assert record["token_correct"]
    assert record["best_loss"] < 0.5 < record["initial_loss"]
    assert trigger in record["suffix_ids"]  # it found the planted trigger


def test_gcg_attack_reports_budget_accuracy_and_writes_files(tiny, tmp_path):
    model, tokenizer = tiny
    task = tiny_task(4)
    data = gcg_attack({"a": (model, tokenizer)}, task, tmp_path, n_tokens=4, steps=3, candidates=8, top_k=8,
                      progress=False)
    entry = data["models"]["a"]
    assert data["budget"]["forward_candidates_per_question"] == 24
    assert data["budget"]["total_forward_candidates_per_model"] == 96
    plain = evaluate(model, tokenizer, task, scoring="letter", progress=False)[task.name].accuracy
    assert entry["accuracy_before"] == pytest.approx(plain)
    assert len(entry["mean_loss_curve"]) == 4
    assert entry["mean_best_loss"] <= entry["mean_initial_loss"]
    for record in entry["questions"]:
        assert record["candidates_evaluated"] <= 24
    assert (tmp_path / "gcg.json").is_file() and (tmp_path / "gcg.png").stat().st_size > 0


@pytest.mark.parametrize("scoring", ["cloze", "completion"])
def test_gcg_on_answer_text_scorings_is_exact_and_agrees_with_the_evaluator(tiny, scoring):
    model, tokenizer = tiny
    task = tiny_task(3)
    data = gcg_attack({"a": (model, tokenizer)}, task, None, n_tokens=4, steps=4, candidates=16, top_k=16,
                      scoring=scoring, progress=False)
    entry = data["models"]["a"]
    assert data["settings"]["scoring"] == scoring
    plain = evaluate(model, tokenizer, task, scoring=scoring, progress=False)[task.name]
    assert entry["accuracy_before"] == pytest.approx(plain.accuracy)
    layout = make_layout(tokenizer, task.questions[0], scoring)
    assert layout.after == ([] if scoring == "completion" else tokenizer("\nAnswer:", add_special_tokens=False)["input_ids"])
    for question, record in zip(task.questions, entry["questions"]):
        assert record["best_loss"] <= record["initial_loss"]
        assert record["best_loss"] == pytest.approx(direct_loss(model, tokenizer, question, record["suffix_ids"], scoring),
                                                    abs=1e-4)
    # the evaluator, fed the suffix as text, predicts what the attack predicted for the token sequence
    attacked = Task("attacked", [Question(q.question.strip() + r["suffix_text"], q.choices, q.answer, q.subject)
                                 for q, r in zip(task.questions, entry["questions"])])
    scored = evaluate(model, tokenizer, attacked, scoring=scoring, progress=False)["attacked"]
    assert [p.correct for p in scored.predictions] == [r["token_correct"] for r in entry["questions"]]
    # transfer: question i with the suffix of question i + 1
    records = entry["questions"]
    shifted = Task("shifted", [Question(q.question.strip() + records[(i + 1) % 3]["suffix_text"], q.choices, q.answer,
                                        q.subject) for i, q in enumerate(task.questions)])
    transfer = evaluate(model, tokenizer, shifted, scoring=scoring, progress=False)["shifted"]
    assert entry["accuracy_with_other_suffix"] == pytest.approx(transfer.accuracy)
    assert [r["correct_with_other_suffix"] for r in records] == [p.correct for p in transfer.predictions]


def test_gcg_rejects_an_unknown_scoring(tiny):
    with pytest.raises(AttackError, match="scoring"):
        gcg_attack({"a": tiny}, tiny_task(), scoring="essay", progress=False)


def test_suffix_losses_batching_does_not_change_numbers(tiny):
    model, tokenizer = tiny
    layout = make_layout(tokenizer, tiny_task().questions[0])
    suffixes = [[i + 10] * 3 for i in range(5)]
    together = suffix_losses(model, layout, suffixes, batch_size=5)
    apart = suffix_losses(model, layout, suffixes, batch_size=2)
    assert torch.allclose(together, apart, atol=1e-5)


def test_gcg_rejects_bad_budgets(tiny):
    with pytest.raises(AttackError, match="steps"):
        gcg_attack({"a": tiny}, tiny_task(), steps=0, progress=False)


# --------------------------------------------------------------------------------------------- ablation


def test_projection_removes_the_component_exactly():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 16)
    direction = torch.randn(16)
    projected = project_out(hidden, direction)
    unit = direction / direction.norm()
    assert torch.allclose(projected @ unit, torch.zeros(2, 5), atol=1e-5)
    removed = hidden - projected
    assert torch.allclose(removed, (hidden @ unit)[..., None] * unit, atol=1e-5)
    assert torch.allclose(project_out(projected, direction), projected, atol=1e-5)  # idempotent
    assert torch.equal(project_out(hidden, torch.zeros(16)), hidden)


def test_zero_direction_changes_nothing_and_a_real_one_does(tiny):
    model, tokenizer = tiny
    ids = tokenizer("Hydrogen has the symbol H.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with projection_hook(model, 2, torch.zeros(64)):
            zero = model(input_ids=ids).logits
        with projection_hook(model, 2, torch.randn(64)):
            moved = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(plain, zero)
    assert not torch.allclose(plain, moved)
    assert torch.equal(plain, after)  # the hook is gone


def test_projection_hook_output_is_orthogonal_to_the_direction(tiny):
    model, tokenizer = tiny
    ids = tokenizer("Iron has the symbol Fe.", return_tensors="pt")["input_ids"]
    direction = torch.randn(64)
    with torch.no_grad(), projection_hook(model, 1, direction):
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[2]  # output of layer 1
    assert torch.allclose(hidden[0] @ (direction / direction.norm()), torch.zeros(ids.shape[1]), atol=1e-4)


def test_ablate_attack_diff_of_identical_models_is_zero_and_changes_nothing(tiny, tmp_path):
    model, tokenizer = tiny
    task = tiny_task()
    data = ablate_attack({"same": (model, tokenizer)}, task, tmp_path, layer=2, base=(model, tokenizer),
                         forget_texts=["Hydrogen has the symbol H."] * 4, control_vectors={"same": torch.zeros(64)},
                         retain_questions=task, progress=False)
    entry = data["models"]["same"]
    assert entry["directions"]["diff"]["norm"] == 0
    for kind in ("diff", "u"):
        assert entry["directions"][kind]["forget"] == entry["none"]["forget"]
        assert entry["directions"][kind]["retain"] == entry["none"]["retain"]
    assert (tmp_path / "ablate.png").is_file()


def test_ablate_errors(tiny):
    with pytest.raises(AttackError, match="base model"):
        ablate_attack({"a": tiny}, tiny_task(), layer=1, progress=False)
    with pytest.raises(AttackError, match="hidden size"):
        ablate_attack({"a": tiny}, tiny_task(), layer=1, control_vectors={"a": torch.ones(3)}, progress=False)
    with pytest.raises(AttackError, match="outside the model"):
        ablate_attack({"a": tiny}, tiny_task(), layer=9, control_vectors={"a": torch.ones(64)}, progress=False)


# --------------------------------------------------------------------------------------------- relearning


def test_relearn_with_lr_zero_changes_nothing(tiny):
    model, tokenizer = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = relearn_attack({"a": (model, tokenizer)}, tiny_task(), ["Hydrogen has the symbol H."] * 4,
                          ["The quick brown fox."] * 4, k=4, steps=3, lr=0.0, eval_every=1, progress=False)
    for corpus in ("forget", "unrelated"):
        accuracies = [p["accuracy"] for p in data["models"]["a"][corpus]["points"]]
        assert [p["step"] for p in data["models"]["a"][corpus]["points"]] == [0, 1, 2, 3]
        assert len(set(accuracies)) == 1
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name])


def test_relearn_trains_then_restores_the_weights(tiny):
    model, tokenizer = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = relearn_attack({"a": (model, tokenizer)}, tiny_task(), ["Hydrogen has the symbol H."] * 4, k=2, steps=4,
                          lr=1e-2, eval_every=2, params=["*mlp*"], progress=False)
    curve = data["models"]["a"]["forget"]
    assert curve["losses"][-1] < curve["losses"][0]  # it did learn the text
    assert curve["trained_parameters"] == 4 * 3  # gate, up, down of 4 layers
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name])
    with pytest.raises(AttackError, match="no parameter matches"):
        relearn_attack({"a": (model, tokenizer)}, tiny_task(), ["text"] * 2, params=["nothing*"], progress=False)


# --------------------------------------------------------------------------------------------- probes


def test_probe_is_perfect_on_linearly_separable_data():
    generator = torch.Generator().manual_seed(0)
    labels = [i % 4 for i in range(80)]
    centres = torch.randn(4, 32, generator=generator) * 3
    features = centres[labels] + 0.1 * torch.randn(80, 32, generator=generator)
    assert probe_accuracy(features.numpy(), labels) >= 0.99
    shuffled = torch.randn(80, 32, generator=generator)
    assert probe_accuracy(shuffled.numpy(), labels, splits=5) < 0.6


def test_statement_probe_finds_the_true_statement_only_when_it_is_encoded():
    from rmu.attacks.probe import statement_probe_accuracy

    generator = torch.Generator().manual_seed(0)
    answers = [i % 4 for i in range(60)]
    truth_direction = torch.randn(32, generator=generator)
    features = torch.randn(60, 4, 32, generator=generator)
    encoded = features.clone()
    encoded[torch.arange(60), torch.tensor(answers)] += 3 * truth_direction  # true statements lean one way
    assert statement_probe_accuracy(encoded.reshape(240, 32).numpy(), answers, 4) >= 0.95
    chance = statement_probe_accuracy(features.reshape(240, 32).numpy(), answers, 4, splits=10)
    assert chance < 0.5


def test_probe_attack_on_statements(tiny, tmp_path):
    model, tokenizer = tiny
    data = probe_attack({"a": (model, tokenizer)}, tiny_task(12), tmp_path, prompt="completion", splits=2,
                        progress=False)
    assert data["majority_class"] == pytest.approx(0.25)
    assert data["settings"]["target"] == "the true statement among the choices"
    accuracy = data["models"]["a"]["accuracy"]
    assert len(accuracy) == model.config.num_hidden_layers and all(0 <= a <= 1 for a in accuracy)


def test_probe_attack_per_layer(tiny, tmp_path):
    model, tokenizer = tiny
    data = probe_attack({"a": (model, tokenizer)}, tiny_task(16), tmp_path, splits=2, progress=False)
    entry = data["models"]["a"]
    assert entry["layers"] == [0, 1, 2, 3]
    assert all(0 <= a <= 1 for a in entry["accuracy"])
    assert data["majority_class"] == 0.25
    assert (tmp_path / "probe.png").is_file()
    with pytest.raises(AttackError, match="several questions"):
        probe_attack({"a": (model, tokenizer)}, tiny_task(2), progress=False)


# --------------------------------------------------------------------------------------------- keywords


def test_insert_keywords_is_seeded_and_keeps_answers():
    task = tiny_task(6)
    first = insert_keywords(task, ["Iron", "Neon"], seed=3)
    assert first.questions == insert_keywords(task, ["Iron", "Neon"], seed=3).questions
    for old, new in zip(task.questions, first.questions):
        assert new.question.endswith(old.question) and new.answer == old.answer and new.choices == old.choices
        assert new.question.split()[0] in ("Iron", "Neon")
    with pytest.raises(AttackError, match="keyword"):
        insert_keywords(task, [])
    with pytest.raises(AttackError, match="template"):
        insert_keywords(task, ["Iron"], template="no placeholder")


def test_keyword_attack_matches_the_evaluator(tiny, tmp_path):
    model, tokenizer = tiny
    task = tiny_task()
    data = keyword_attack({"a": (model, tokenizer)}, task, ["Iron"], tmp_path, template=DEFAULT_TEMPLATE,
                          progress=False)
    keyworded = insert_keywords(task, ["Iron"])
    expected = evaluate(model, tokenizer, keyworded, scoring="cloze", progress=False)[keyworded.name].accuracy
    entry = data["models"]["a"]
    assert entry["retain_with_keyword"] == expected
    assert entry["drop"] == pytest.approx(entry["retain"] - expected)
    assert entry["excess_drop"] is None  # no model named "base"
    assert (tmp_path / "keywords.png").is_file()


def test_keyword_positions_place_the_sentence():
    assert place_sentence("The capital of Peru is", "Iron.", "before") == "Iron. The capital of Peru is"
    assert place_sentence("The capital of Peru is", "Iron.", "after") == "The capital of Peru is (Iron.)"
    assert place_sentence("The capital of Peru is", "Iron.", "inside") == "The capital of Peru (Iron.) is"
    assert place_sentence("Capital?", "Iron.", "inside") == "(Iron.) Capital?"
    with pytest.raises(AttackError, match="position"):
        insert_keywords(tiny_task(2), ["Iron"], position="middle")


def test_keyword_attack_crosses_templates_and_positions_and_compares_with_base(tmp_path):
    models = {"base": tiny_model(seed=0), "other": tiny_model(seed=1)}
    task = tiny_task(12)
    templates = ["{keyword} is here.", "About {keyword}:"]
    data = keyword_attack(models, task, ["Iron", "Neon"], tmp_path, templates=templates,
                          positions=["before", "inside"], seed=2, progress=False)
    assert data["settings"]["templates"] == templates and len(data["settings"]["examples"]) == 4
    for name, (model, tokenizer) in models.items():
        entry = data["models"][name]
        assert [(v["template"], v["position"]) for v in entry["variants"]] == [
            (t, p) for t in templates for p in ("before", "inside")]
        for variant in entry["variants"]:
            keyworded = insert_keywords(task, ["Iron", "Neon"], variant["template"], 2, variant["position"])
            expected = evaluate(model, tokenizer, keyworded, scoring="cloze", progress=False)[keyworded.name].accuracy
            assert variant["retain_with_keyword"] == expected
            assert variant["drop"] == pytest.approx(entry["retain"] - expected)
        assert entry["drop"] == pytest.approx(sum(v["drop"] for v in entry["variants"]) / 4)
    base, other = data["models"]["base"], data["models"]["other"]
    assert base["excess_drop"] == pytest.approx(0) and other["base_drop"] == base["drop"]
    assert other["excess_drop"] == pytest.approx(other["drop"] - base["drop"])
    for mine, theirs in zip(other["variants"], base["variants"]):
        assert mine["excess_drop"] == pytest.approx(mine["drop"] - theirs["drop"])
    assert json.loads((tmp_path / "keywords.json").read_text())["models"]["other"]["excess_drop"] == \
        pytest.approx(other["excess_drop"])


def test_default_attack_templates_are_never_trained_on():
    from rmu.keywords import TRAINING_TEMPLATES

    assert not set(HELD_OUT_TEMPLATES) & set(TRAINING_TEMPLATES)
    assert DEFAULT_TEMPLATE not in TRAINING_TEMPLATES


# --------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model = save_tiny_model(folder / "model")
    questions = write_questions(folder / "questions.jsonl", tiny_task(8))
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Hydrogen has the symbol H. Document {i}."}) + "\n"
                              for i in range(6)))
    keywords = folder / "keywords.txt"
    keywords.write_text("Iron\nNeon\n")
    return {"model": model, "questions": questions, "corpus": corpus, "keywords": keywords, "folder": folder}


def invoke(args):
    from rmu.cli.attack import command

    return CliRunner().invoke(command, args, catch_exceptions=False)


def invoke_rmu(args):
    """Through the ``rmu`` group, which prints the commands' errors."""
    from rmu.cli import main

    return CliRunner().invoke(main, ["attack", *args])


@pytest.fixture(scope="module")
def attack_folders(checkpoint, tmp_path_factory):
    """Every attack run once through the command line with tiny budgets: name -> (result, output folder)."""
    c, out = checkpoint, tmp_path_factory.mktemp("attacks")
    model, questions = f"tiny={c['model']}", str(c["questions"])
    runs = {
        "gcg": ["--tokens", "3", "--steps", "2", "--candidates", "4", "--top-k", "4", "--limit", "2"],
        "relearn": ["--forget-texts", str(c["corpus"]), "--other-texts", str(c["corpus"]), "--steps", "2",
                    "--eval-every", "1", "--k", "2"],
        "ablate": ["--base", str(c["model"]), "--forget-texts", str(c["corpus"]), "--layer", "1", "--project-layers",
                   "0-1"],
        "probe": ["--splits", "2"],
        "keywords": ["--keywords", str(c["keywords"]), "--template", "{keyword} here.", "--template",
                     "About {keyword}:", "--position", "before", "--position", "after", "--base", "tiny"],
    }
    return {name: (invoke([name, "--model", model, "--questions", questions, "--output", str(out / name), "--quiet",
                           *extra]), out / name) for name, extra in runs.items()}


def test_cli_runs_every_attack(attack_folders):
    for name, (result, output) in attack_folders.items():
        assert result.exit_code == 0, result.output
        assert (output / f"{name}.json").is_file() and (output / f"{name}.png").is_file()
        assert f"{name}.json and {name}.png written" in result.output


def test_cli_errors_are_clear(checkpoint, tmp_path):
    c = checkpoint
    model = f"tiny={c['model']}"
    result = invoke_rmu(["ablate", "--model", model, "--questions", str(c["questions"]), "--output", str(tmp_path)])
    assert result.exit_code != 0 and "--base" in result.output
    result = invoke_rmu(["ablate", "--model", model, "--questions", str(c["questions"]), "--output", str(tmp_path),
                         "--use-u", "--layer", "1"])
    assert result.exit_code != 0 and "control_vectors.safetensors" in result.output
    result = invoke_rmu(["probe", "--model", model, "--questions", str(tmp_path / "missing.jsonl"), "--output",
                         str(tmp_path)])
    assert result.exit_code != 0 and "not found" in result.output
    result = invoke_rmu(["keywords", "--model", model, "--questions", str(c["questions"]), "--output", str(tmp_path)])
    assert result.exit_code != 0 and "--keyword" in result.output
    result = invoke_rmu(["gcg", "--model", f"x={tmp_path / 'nope'}", "--questions", str(c["questions"]),
                         "--output", str(tmp_path)])
    assert result.exit_code != 0 and "not a checkpoint folder" in result.output


def test_report_shows_every_attack_from_its_json(attack_folders, tmp_path):
    from rmu.report import build_report

    folders = {name: output for name, (_, output) in attack_folders.items()}
    page = build_report(list(folders.values()), tmp_path / "report")["markdown"].read_text()
    data = {name: json.loads((folder / f"{name}.json").read_text()) for name, folder in folders.items()}
    for title, name in [("GCG adversarial suffixes", "gcg"), ("Relearning attack", "relearn"),
                        ("Direction ablation", "ablate"), ("Linear probes", "probe"),
                        ("Forget keywords in retain questions", "keywords")]:
        assert f"## {title}: {name}" in page and f"{name}.png)" in page
    gcg = data["gcg"]["models"]["tiny"]
    assert f"| tiny | {gcg['accuracy_before']:.4g} | {gcg['accuracy_after']:.4g} |" in page
    [first, *_] = data["relearn"]["models"]["tiny"]["unrelated"]["points"]
    assert f"| tiny | unrelated | 0 | {first['accuracy']:.4g} |" in page
    ablate = data["ablate"]
    assert ablate["settings"]["project_layers"] == [0, 1]
    diff = ablate["models"]["tiny"]["directions"]["diff"]
    assert f"| base | none | {ablate['base']['forget']:.4g} |" in page
    assert f"| tiny | diff | {diff['forget']:.4g} | {diff['norm']:.4g} |" in page
    probe = data["probe"]["models"]["tiny"]
    assert f"| tiny | 3 | {probe['accuracy'][3]:.4g} |" in page
    [variant, *_] = data["keywords"]["models"]["tiny"]["variants"]
    assert f"| tiny | {variant['template']} | before | {variant['retain_with_keyword']:.4g} |" in page
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5


def test_ablate_settings_read_layers_and_fill_in_what_the_run_folder_knows(checkpoint, tmp_path):
    from rmu.attacks import AblateSettings
    from rmu.experiments import ExperimentError

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"layer": 2}}))
    (run / "control_vectors.safetensors").write_text("")
    settings = AblateSettings.parse(models=[f"rmu={run}"], questions="q.jsonl", use_u=True, project_layers="0,2-3")
    assert settings.layer == 2 and settings.project_layers == [0, 2, 3]
    assert settings.control_vectors == {"rmu": str(run / "control_vectors.safetensors")}
    assert AblateSettings.parse(models=[str(run)], questions="q", use_u=True).project_layers == [2]  # --layer's
    with pytest.raises(ExperimentError, match="project_layers: .*a range with a step"):
        AblateSettings.parse(models=[str(run)], questions="q", use_u=True, project_layers="3-1")
    with pytest.raises(ExperimentError, match=r"give --layer \(no run.json"):
        AblateSettings.parse(models=[str(checkpoint["model"])], questions="q", base=str(run), forget_texts="f")
    with pytest.raises(ExperimentError) as error:  # a rule across settings: its message only, not every value
        AblateSettings.parse(models=[str(run)], questions="q")
    assert str(error.value) == ("AblateSettings: give the base model (--base) with forget texts (--forget-texts) for "
                                "the diff direction, and/or control vectors (--use-u) for u")


def test_python_api_saves_what_it_was_given(tiny, tmp_path):
    model, tokenizer = tiny
    data = relearn_attack({"a": (model, tokenizer)}, tiny_task(4), ["Hydrogen has the symbol H."] * 3, k=2, steps=1,
                          params="*mlp*", progress=False)
    assert data["kind"] == "relearn"
    assert {k: data["settings"][k] for k in ("models", "questions", "forget_texts", "other_texts", "params")} == {
        "models": {"a": "in memory"}, "questions": "tiny", "forget_texts": "3 texts", "other_texts": None,
        "params": ["*mlp*"]}
    assert data["settings"]["documents"] == {"forget": 2} and data["settings"]["count"] == 4
    result = invoke_rmu(["probe", "--questions", "q.jsonl", "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Missing option '--model'" in result.output

