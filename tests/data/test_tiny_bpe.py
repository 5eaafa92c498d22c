"""The tests' own GPT-2-style vocabulary (tests/tiny_bpe.py) is one that gpt2_jax's
tokenizer, tiktoken's loader and Hugging Face's GPT2Tokenizer all read the same way."""

import json
import random
import shutil

import pytest
from tiny_bpe import byte_symbols, reference_encode

from gpt2_jax.data.tokenizer import END_OF_TEXT_ID, get_tokenizer

TEXTS = [
    "Hello, world",
    "Every effort moves you",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005!!  \u00a3100 ok?",
    "I'll be late, the bus broke down again :(",
    "  two  spaces\tand a tab\n\nlines",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001f642\U0001f44d",
    "\x00\x01\x7f control",
    "URGENT: your account has been suspended, reply with your PIN",
    "ok",
    "",
]


def _random_texts(n=200, seed=0):
    rng = random.Random(seed)
    alphabet = (
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,!?'$:;()"
        "\n\t \u00e9\u00fc\u00a3\u20ac\u4e2d\U0001f600"
    )
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def test_the_files_are_in_openais_format(tiny_bpe_dir):
    encoder = json.loads((tiny_bpe_dir / "encoder.json").read_text(encoding="utf-8"))
    text = (tiny_bpe_dir / "vocab.bpe").read_text(encoding="utf-8")
    assert text.startswith("#version: 0.2\n") and text.endswith("\n")
    merges = text.split("\n")[1:-1]
    assert len(merges) == 50000 and len(encoder) == 50257
    assert encoder["<|endoftext|>"] == END_OF_TEXT_ID == 50256
    assert sorted(encoder.values()) == list(range(50257))
    assert {encoder[s] for s in byte_symbols().values()} == set(range(256))
    # merge k makes token 256 + k, from two tokens that exist before it
    for k, line in enumerate(merges):
        first, second = line.split(" ")
        assert encoder[first + second] == 256 + k
        assert encoder[first] < 256 + k and encoder[second] < 256 + k


def test_gpt2_jax_reads_them_as_gpt2_sized_with_end_of_text_50256(tiny_bpe_dir):
    tok = get_tokenizer(tiny_bpe_dir, offline=True)
    assert tok.n_vocab == 50257 and tok.eot_token == END_OF_TEXT_ID
    assert tok.encode("<|endoftext|>", allowed_special="all") == [END_OF_TEXT_ID]
    assert tok.encode("x <|endoftext|>", allowed_special="all")[-1] == END_OF_TEXT_ID
    for text in TEXTS + _random_texts():
        ids = tok.encode(text)
        assert all(0 <= i < END_OF_TEXT_ID for i in ids)
        assert tok.decode(ids) == text
    # a vocabulary with merges: ordinary English takes far fewer tokens than bytes
    english = TEXTS[7]
    assert len(tok.encode(english)) < len(english.encode()) / 2


def test_tiktoken_gives_the_ids_of_plain_bpe(tiny_bpe_dir):
    tok = get_tokenizer(tiny_bpe_dir, offline=True)
    for text in TEXTS + _random_texts():
        assert tok.encode(text) == reference_encode(text, tiny_bpe_dir), repr(text)


def test_transformers_reads_them_as_vocab_json_and_merges_txt(tiny_bpe_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    shutil.copyfile(tiny_bpe_dir / "encoder.json", tmp_path / "vocab.json")
    shutil.copyfile(tiny_bpe_dir / "vocab.bpe", tmp_path / "merges.txt")
    hf = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    tok = get_tokenizer(tmp_path, offline=True)  # gpt2_jax reads Hugging Face's names too
    assert len(hf) == 50257 and hf.eos_token_id == END_OF_TEXT_ID
    for text in TEXTS + _random_texts(100, seed=1):
        assert hf(text)["input_ids"] == tok.encode(text), repr(text)
