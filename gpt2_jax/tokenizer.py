"""GPT-2's byte-pair encoding through tiktoken.

Built from a model directory's ``encoder.json`` + ``vocab.bpe`` when they are there
(no network needed), else from ``tiktoken.get_encoding("gpt2")``.
"""
from __future__ import annotations

import os
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
# GPT-2's pre-tokenisation regex (contractions, letters, digits, other, spaces).
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def get_tokenizer(bpe_dir: str | os.PathLike | None = None) -> tiktoken.Encoding:
    """GPT-2 tokenizer; ``bpe_dir`` is a folder with ``encoder.json`` and ``vocab.bpe``."""
    if bpe_dir is not None:
        encoder, vocab = Path(bpe_dir) / "encoder.json", Path(bpe_dir) / "vocab.bpe"
        if encoder.is_file() and vocab.is_file():
            ranks = data_gym_to_mergeable_bpe_ranks(
                vocab_bpe_file=str(vocab), encoder_json_file=str(encoder)
            )
            return tiktoken.Encoding(
                name="gpt2",
                pat_str=GPT2_SPLIT_PATTERN,
                mergeable_ranks=ranks,
                special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
                explicit_n_vocab=END_OF_TEXT_ID + 1,
            )
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # network errors surface as several types
        where = f" in {bpe_dir}" if bpe_dir is not None else ""
        raise RuntimeError(
            f"GPT-2 tokenizer unavailable: no encoder.json + vocab.bpe{where}, and tiktoken "
            f"could not download them ({err}). Put both files in the model directory."
        ) from err
