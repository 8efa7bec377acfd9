"""rmu.fingerprint on its own: the identity of inputs (large files by their edges) and how changes read.

The resume tests in test_run_folder.py use it end to end on tiny models, whose files are all small;
here the large-file path is exercised by lowering the size limit."""

from __future__ import annotations

import os

from rmu import fingerprint
from rmu.fingerprint import differences, model_identity, source_identity


def test_a_large_file_is_known_by_size_time_and_edges(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "_WHOLE_FILE_LIMIT", 64)
    monkeypatch.setattr(fingerprint, "_EDGE", 16)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes(bytes(range(200)))
    before = model_identity(str(folder))
    assert set(before["files"]["model.safetensors"]) == {"size", "mtime_ns", "edges_sha256"}
    assert set(before["files"]["config.json"]) == {"sha256"}

    # The middle is not read: a change there with the time put back goes unseen (the documented trade-off).
    stat = weights.stat()
    weights.write_bytes(bytes(range(100)) + b"x" + bytes(range(101, 200)))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model_identity(str(folder)) == before
    # A change in the header (the first MiB) is seen even then.
    weights.write_bytes(b"y" + bytes(range(1, 200)))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = model_identity(str(folder))
    assert after != before
    saved = {"options": {}, "inputs": {f"model {folder}": before}}
    current = {"options": {}, "inputs": {f"model {folder}": after}}
    assert differences(saved, current) == [f"model {folder} changed: files model.safetensors differ"]


def test_inputs_are_matched_by_role_not_by_path(tmp_path):
    corpus = tmp_path / "a.jsonl"
    corpus.write_text('{"text": "x"}\n')
    copy = tmp_path / "elsewhere.jsonl"
    copy.write_text(corpus.read_text())
    saved = {"options": {"lr": 1e-3}, "inputs": {f"forget corpus 'bio' ({corpus})": source_identity(str(corpus))}}
    current = {"options": {"lr": 1e-3}, "inputs": {f"forget corpus 'bio' ({copy})": source_identity(str(copy))}}
    assert differences(saved, current) == []
    current["options"]["lr"] = 2e-3
    assert differences(saved, current) == ["--lr was 0.001, now 0.002"]


def test_hub_ids_are_names_and_old_states_are_said_to_be_old():
    assert source_identity("HuggingFaceTB/SmolLM2-135M") == {"name": "HuggingFaceTB/SmolLM2-135M"}
    assert model_identity("HuggingFaceTB/SmolLM2-135M") == {"name": "HuggingFaceTB/SmolLM2-135M"}
    assert differences(None, {"options": {}, "inputs": {}}) == [
        "the saved state has no fingerprint (written by an older rmu)"]


def test_options_added_since_a_state_was_saved_count_only_away_from_their_older_behaviour():
    """A run saved by an older rmu, before --loss-dims and --keyword-mask existed, resumes while they are
    set as that rmu behaved (all dimensions; no mask)."""
    saved = {"options": {"lr": 1e-3}, "inputs": {}}
    assert differences(saved, {"options": {"lr": 1e-3, "loss_dims": "all", "keyword_mask": False}, "inputs": {}}) == []
    assert differences(saved, {"options": {"lr": 1e-3, "loss_dims": "informative", "keyword_mask": True},
                               "inputs": {}}) == ["--keyword-mask was None, now True", "--loss-dims was None, now 'informative'"]
    assert differences(saved, {"options": {"lr": 1e-3, "not_an_option": 1}, "inputs": {}}) == [
        "--not-an-option was None, now 1"]


def test_keyword_mask_is_no_part_of_a_run_without_keyword_robust(tmp_path):
    from rmu.config import make_config
    from rmu.fingerprint import run_fingerprint

    corpus = tmp_path / "a.jsonl"
    corpus.write_text('{"text": "x"}\n')
    base = {"model": "some/hub-id", "forget": {"bio": str(corpus)}, "retain": [str(corpus)]}
    assert "keyword_mask" not in run_fingerprint(make_config(base))["options"]
    assert run_fingerprint(make_config(base | {"keyword_robust": True}))["options"]["keyword_mask"] is True
