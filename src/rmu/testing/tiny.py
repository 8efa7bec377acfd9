"""Tiny offline models and tokenizers, for tests, benchmarks and examples: no hub, seconds to build.

A tokenizer is trained on the fly (byte-level BPE) and saved with a random-weight model of any
supported architecture, so code paths that load from a folder are exercised exactly as for a real
checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

TINY_ARCHITECTURES = ("llama", "gpt2", "qwen2", "gemma3_text", "gpt_neox", "phi", "mistral")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pathogens, toxins and enzymes are studied in biology laboratories.",
    "Network exploits and buffer overflows are topics of computer security.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Hydrogen has the symbol H. Oxygen has the symbol O. Iron has the symbol Fe.",
    "Question: Which answer is correct? A. one B. two C. three D. four Answer:",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()-",
]


def tiny_tokenizer(vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences; EOS doubles as the pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>")


def tiny_config(architecture: str = "llama", vocab_size: int = 256, num_layers: int = 4, hidden: int = 64):
    """A config for a random model a few layers deep and ``hidden`` wide."""
    # Special ids are set by tiny_model from the tokenizer; keep the defaults (e.g. GPT-2's 50256) out.
    common = dict(vocab_size=vocab_size, dtype="float32", tie_word_embeddings=False,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if architecture == "gpt2":
        return AutoConfig.for_model(
            "gpt2", n_layer=num_layers, n_embd=hidden, n_head=4, n_positions=512, **common
        )
    if architecture == "gpt_neox":
        return AutoConfig.for_model(
            "gpt_neox", num_hidden_layers=num_layers, hidden_size=hidden, num_attention_heads=4,
            intermediate_size=hidden * 4, max_position_embeddings=512, **common,
        )
    extra = {}  # rotary models: room for the published forget length (768) that the recipes use
    if architecture == "gemma3_text":
        extra = dict(head_dim=16, sliding_window=8, layer_types=None)
    return AutoConfig.for_model(
        architecture, num_hidden_layers=num_layers, hidden_size=hidden, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=hidden * 3, max_position_embeddings=1024,
        **extra, **common,
    )


def tiny_model(architecture: str = "llama", seed: int = 0, **config_overrides):
    """A random-weight causal LM (float32, eval mode) plus its tokenizer."""
    tokenizer = tiny_tokenizer()
    # Headroom rows: AutoTokenizer may reload the tokenizer as the architecture's own class (Qwen2's
    # adds <|endoftext|>), and every id it can produce must have an embedding.
    config = tiny_config(architecture, vocab_size=len(tokenizer) + 7, **config_overrides)
    config.eos_token_id = config.pad_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    return model, tokenizer


def save_tiny_model(path: str | Path, architecture: str = "llama", seed: int = 0, **config_overrides) -> Path:
    """Write a tiny model and tokenizer to ``path`` as a normal Hugging Face checkpoint."""
    model, tokenizer = tiny_model(architecture, seed, **config_overrides)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
