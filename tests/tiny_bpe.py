"""A GPT-2-style byte-level BPE vocabulary made by the tests, for machines without
GPT-2's real ``encoder.json`` + ``vocab.bpe``.

Written in OpenAI's file format, which ``gpt2_jax.data.tokenizer.encoding_from_files``
(through ``tiktoken.load.data_gym_to_mergeable_bpe_ranks``) and Hugging Face's
``GPT2Tokenizer`` (as ``vocab.json`` + ``merges.txt``) read:

* ``vocab.bpe``: a ``#version`` line, then one merge a line (``first second``), in rank
  order, and a final newline; every byte is written as one printable character (the
  printable Latin-1 characters stand for themselves, the other 68 bytes for
  ``chr(256 + n)``, in byte order);
* ``encoder.json``: token (same characters) -> id. The 256 single bytes have ids 0-255
  in the order tiktoken ranks them (the printable ones first, in byte order, then the
  others), merge ``k`` makes token ``256 + k``, and ``<|endoftext|>`` is 50256.

``gpt2_jax`` builds its tiktoken Encoding with ``explicit_n_vocab=50257`` and the end of
text at 50256, so the vocabulary has GPT-2's size: 256 bytes + 50,000 merges + 1. The
first merges are learnt (plain BPE) from a few hundred words of SMS-like English until
each of its words is one token, so ordinary text gives multi-byte tokens; the rest are
two-byte tokens that each hold at least one byte that no learnt token holds (accents,
emoji, control bytes), so they never combine with learnt tokens, and tiktoken's rule
(merge the adjacent pair whose concatenation ranks lowest) and Hugging Face's (merge
the listed pair that ranks lowest) agree on them. Deterministic: the same files every
time.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

import regex

END_OF_TEXT = "<|endoftext|>"
N_MERGES = 50_000  # GPT-2's count: 256 + 50,000 + <|endoftext|> = 50,257 ids
LEARNT_MERGES = 2000
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

CORPUS = (
    """\
Hello, world! Hello again, world. The quick brown fox jumps over the lazy dog.
WINNER!! You have been selected to receive a $900 prize. Call now to claim your prize!
Are we still on for lunch tomorrow? I will be there at one, see you then.
Free entry in 2 a wkly comp to win FA Cup final tkts. Text FA to 87121 to receive entry.
ok, I'll be late, the bus broke down again :( sorry about that, I'm on my way home now.
URGENT: your account has been suspended, reply with your PIN to keep your account open.
Congratulations! You have won a free mobile phone. Call 09061701461 to claim your reward.
Hey, what are you doing tonight? Do you want to come over for dinner with us later?
Thanks for your message. I'll call you back when I get home from work this evening.
Your order has been shipped and will arrive on Monday. Reply STOP to stop messages.
Did you see the game last night? It was great, we should watch the next one together.
Please call our customer service on 0800 123 456 for your free gift, text CLAIM now.
I love you, good night and sleep well. See you in the morning, have a nice day at work.
You are a winner! Claim your cash prize of 1000 pounds today, call the number below.
Can you pick up some milk and bread on the way home? Thanks, love you, see you soon.
The meeting is moved to three o'clock, please tell the others and bring the report.
Your mobile number has won a guaranteed prize, call now, the offer ends this week.
Where are you? We're waiting outside the cinema, the film starts in ten minutes.
WINNER!! You have been selected to receive a £900 prize reward! To claim call 09061701461 now.
Claim code KL341. Valid 12 hours only. Ok lar... Joking wif u oni... Sorry, I'll call later.
WIN a FREE prize now, free entry: reply WIN for your award. URGENT! You have won cash.
see you at home around six, ok i will call you later, thanks, talk to you tomorrow,
can you pick up milk on the way? running late, sorry, five min.
"""
    + " ".join(str(n) for n in range(100))
    + "\n"
)


def byte_symbols() -> dict[int, str]:
    """Byte -> the one character that stands for it in the files."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def byte_ranks() -> list[int]:
    """The bytes in id order: printable ones first (in byte order), then the others."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    return printable + [b for b in range(256) if b not in printable]


def learn_merges(text: str, count: int) -> list[tuple[bytes, bytes]]:
    """Plain byte-level BPE on ``text`` cut by GPT-2's pattern: each round merges the most
    frequent adjacent pair (ties: the smallest bytes), until ``count`` merges or every
    piece is one token."""
    words = Counter(
        tuple(bytes([b]) for b in w.encode("utf-8")) for w in regex.findall(GPT2_SPLIT, text)
    )
    merges: list[tuple[bytes, bytes]] = []
    while len(merges) < count:
        pairs: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        merged: Counter = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def tiny_merges() -> list[tuple[bytes, bytes]]:
    """The 50,000 merges: the learnt ones, then two-byte fillers that each hold a byte no
    learnt token holds."""
    learnt = learn_merges(CORPUS, LEARNT_MERGES)
    made = {a + b for a, b in learnt}
    used = {b for token in made for b in token}
    fillers = (
        (bytes([a]), bytes([b]))
        for a in range(256)
        for b in range(256)
        if a not in used or b not in used
    )
    merges = list(learnt)
    for pair in fillers:
        if len(merges) == N_MERGES:
            break
        if pair[0] + pair[1] not in made:
            merges.append(pair)
            made.add(pair[0] + pair[1])
    assert len(merges) == N_MERGES == len(made), (len(merges), len(made))
    return merges


def write_tiny_bpe(folder: str | Path) -> Path:
    """Write ``encoder.json`` + ``vocab.bpe`` of the tiny vocabulary into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = byte_symbols()

    def spell(token: bytes) -> str:
        return "".join(symbols[b] for b in token)

    merges = tiny_merges()
    encoder = {symbols[b]: i for i, b in enumerate(byte_ranks())}
    for k, (a, b) in enumerate(merges):
        encoder[spell(a + b)] = 256 + k
    encoder[END_OF_TEXT] = 256 + len(merges)
    assert len(encoder) == 50257 and encoder[END_OF_TEXT] == 50256
    (folder / "encoder.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{spell(a)} {spell(b)}" for a, b in merges]
    (folder / "vocab.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def reference_encode(text: str, folder: str | Path) -> list[int]:
    """Ids of ``text`` (no special tokens) from the two files in ``folder``, by the plain
    BPE of GPT-2's original encoder in a few lines of Python: cut by the pattern, spell
    each piece's bytes with the file characters, merge the listed pair of lowest rank
    (every place it occurs) until no listed pair is left. An independent check of what
    tiktoken makes of the files."""
    encoder, ranks = _read_files(str(folder))
    symbols = byte_symbols()
    ids: list[int] = []
    for piece in regex.findall(GPT2_SPLIT, text):
        parts = [symbols[b] for b in piece.encode("utf-8")]
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        ids.extend(encoder[p] for p in parts)
    return ids


@lru_cache(maxsize=4)
def _read_files(folder: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """encoder.json as a dict, vocab.bpe as {(first, second): rank}."""
    encoder = json.loads((Path(folder) / "encoder.json").read_text(encoding="utf-8"))
    lines = (Path(folder) / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]
    return encoder, {tuple(line.split(" ")): rank for rank, line in enumerate(lines)}
