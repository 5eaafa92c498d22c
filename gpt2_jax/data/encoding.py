"""Texts to token ids: encoded splits padded with <|endoftext|>, and each epoch's batch order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gpt2_jax.data.tokenizer import END_OF_TEXT_ID

if TYPE_CHECKING:  # a type only: classifying texts needs no pandas (data.splits)
    from gpt2_jax.data.splits import Splits

PAD_ID = END_OF_TEXT_ID


@dataclass(frozen=True)
class Encoded:
    """Token ids right-padded with <|endoftext|>: ``ids`` [N, L] int32, ``lengths`` [N]
    (real tokens after truncation), ``labels`` [N] int32, ``truncated``: how many
    messages were cut to L."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    truncated: int

    def __len__(self):
        return len(self.labels)


def token_lists(tokenizer, texts) -> list[list[int]]:
    """Token ids of each text. A text holding GPT-2's special token ``<|endoftext|>`` is
    refused (tiktoken's rule, as in the book): naming which text, in one line."""
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(tokenizer.encode(text))
        except ValueError as err:
            if "special token" not in str(err):
                raise
            raise ValueError(
                f"text {i + 1} contains GPT-2's special token <|endoftext|>, "
                "which cannot be part of a text; remove it"
            ) from None
    return out


TRUNCATIONS = ("head", "tail", "head+tail")
KEPT_WORDS = {  # what a text longer than max_length keeps, for logs
    "head": "the first {n} tokens",
    "tail": "the last {n} tokens",
    "head+tail": "the first {h} and the last {t} tokens",
}


def check_truncate(truncate: str) -> str:
    if truncate not in TRUNCATIONS:
        raise ValueError(f"truncate must be one of {TRUNCATIONS}, got {truncate!r}")
    return truncate


def head_tail(max_length: int) -> tuple[int, int]:
    """Tokens ``head+tail`` keeps from the start and from the end: the start gets the odd one."""
    return max_length - max_length // 2, max_length // 2


def kept(tokens: list[int], max_length: int, truncate: str = "head") -> list[int]:
    """The tokens of one text that fit in ``max_length``: the first (``head``, the lab's),
    the last (``tail``), or the first half and the last half (``head+tail``)."""
    if len(tokens) <= max_length or truncate == "head":
        return tokens[:max_length]
    if truncate == "tail":
        return tokens[len(tokens) - max_length :]
    h, t = head_tail(max_length)
    return tokens[:h] + tokens[len(tokens) - t :]


def kept_words(max_length: int, truncate: str) -> str:
    """``kept`` in words: "the first 40 tokens", ..."""
    h, t = head_tail(max_length)
    return KEPT_WORDS[check_truncate(truncate)].format(n=max_length, h=h, t=t)


def encode(tokens: list[list[int]], labels, max_length: int, truncate: str = "head") -> Encoded:
    """Each text's ``kept`` tokens right-padded to ``max_length``."""
    check_truncate(truncate)
    ids = np.full((len(tokens), max_length), PAD_ID, np.int32)
    lengths = np.zeros(len(tokens), np.int32)
    for row, toks in enumerate(tokens):
        toks = kept(toks, max_length, truncate)
        ids[row, : len(toks)] = toks
        lengths[row] = len(toks)
    truncated = sum(len(t) > max_length for t in tokens)
    return Encoded(ids, lengths, np.asarray(labels, np.int32), truncated)


def encode_splits(
    splits: Splits,
    tokenizer,
    context_length: int,
    max_length: int | None = None,
    vocab_size: int | None = None,
    truncate: str = "head",
) -> tuple[dict[str, Encoded], int]:
    """Encode every split (``text`` -> ids, ``y`` -> labels) to one length: ``max_length``
    or the longest training text, capped at the model's context. Returns
    ``({"train": ..., ...}, length)``."""
    tokens = split_tokens(splits, tokenizer, vocab_size)
    length = run_length(tokens, context_length, max_length)
    encoded = {
        name: encode(tokens[name], df["y"].to_numpy(), length, truncate)
        for name, df in splits.items()
    }
    return encoded, length


def split_tokens(splits: Splits, tokenizer, vocab_size: int | None) -> dict[str, list[list[int]]]:
    """Every split's texts as token ids, each id checked against ``vocab_size``."""
    tokens = {name: token_lists(tokenizer, df["text"]) for name, df in splits.items()}
    if vocab_size is not None:
        for name, df in splits.items():
            for row, toks in enumerate(tokens[name]):
                if toks and max(toks) >= vocab_size:
                    place = df["where"].iloc[row] if "where" in df else f"row {row + 1}"
                    raise ValueError(
                        f"{place} ({name} split) has token id {max(toks)}, but "
                        f"the model's vocabulary has only {vocab_size} ids: "
                        "tokenizer and model do not belong together"
                    )
    return tokens


def run_length(
    tokens: dict[str, list[list[int]]], context_length: int, max_length: int | None
) -> int:
    """``max_length`` or the longest training text, capped at the model's context."""
    if max_length is None:
        max_length = max(len(t) for t in tokens["train"])
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    return min(max_length, context_length)


def epoch_order(
    n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = True
) -> list[np.ndarray]:
    """Index arrays of the batches of one epoch; the order depends only on (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]
