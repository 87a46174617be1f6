"""A real, tiny, randomly initialised Llama model with a real tokenizer, built offline.

Used by the transformers backend tests (through ``conftest.py``) and by the bench scripts.
The tokenizer is a byte-level BPE trained here on a few sentences, wrapped in
``PreTrainedTokenizerFast`` with a ChatML chat template; the model is a
``LlamaForCausalLM`` saved with ``save_pretrained`` (safetensors). :func:`install_in_cache`
writes the files into the real Hugging Face cache layout (``models--org--name/blobs``,
``snapshots/<commit>``, ``refs/main``) through :func:`mimir.cache.layout.write_revision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mimir.cache.layout import write_revision

TINY_REPO = "mimir-test/tiny-llama"
TINY_COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TEXT = [
    "The tutor explains the method step by step and offers a similar worked example.",
    "What does cos, tan and sin do? They relate the angles of a triangle to its sides.",
    "Solve 3x - y = 7 and 2x + 3y = 1 by substitution or elimination.",
    "Practice questions help students learn. YES or NO? Answer YES when it applies, NO otherwise.",
    "Summation adds a sequence of numbers: the sigma symbol means sum.",
]


@dataclass(frozen=True)
class TinyShape:
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    vocab_size: int = 400


def build_tiny_llama(out_dir: Path, shape: TinyShape = TinyShape(), *, seed: int = 0, dtype: str = "float32") -> Path:
    """Train a tokenizer, initialise a random Llama, ``save_pretrained`` both into ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=shape.vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_TEXT * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.2,  # lively random weights: greedy output varies token to token
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def model_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def install_in_cache(cache_dir: Path, files: dict[str, bytes], repo_id: str = TINY_REPO, commit: str = TINY_COMMIT) -> Path:
    """Write ``files`` as one snapshot of ``repo_id`` with ``refs/main`` -> ``commit``."""
    return write_revision(cache_dir, repo_id, commit, files, refs=["main"])
