"""Greedy generation: equal to the plain loop, compiled once per buffer shape with the
weights as arguments."""

import dataclasses

import numpy as np
import pytest

import gpt2_jax.model.generate as gen
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.generate import generate, generate_text
from gpt2_jax.model.gpt import GPTModel, init_params

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=16, n_heads=2, n_layers=2)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=0)


def plain_greedy(params, ids, max_new_tokens):
    """The obvious way: no jit, the whole (last context_length tokens of the) text each step."""
    ids = np.atleast_2d(np.asarray(ids, np.int32))
    for _ in range(max_new_tokens):
        logits = GPTModel(CFG).apply({"params": params}, ids[:, -CFG.context_length :])
        ids = np.concatenate([ids, np.argmax(logits[:, -1], axis=-1)[:, None]], axis=1)
    return ids


@pytest.mark.parametrize(
    "prompt, new",
    [
        ([5, 17, 3], 5),  # [T]
        ([[5, 17, 3, 9], [1, 2, 3, 4]], 6),  # [B, T]
        (list(range(10)), 12),  # grows past context_length 16
    ],
)
def test_equals_the_plain_greedy_loop(params, prompt, new):
    got = generate(GPTModel(CFG), params, prompt, new)
    want = plain_greedy(params, prompt, new)
    np.testing.assert_array_equal(got, want[0] if np.ndim(prompt) == 1 else want)


def test_compiles_once_per_shape(params, monkeypatch):
    """A trace builds GPTModel (looked up when traced): none after the first call."""
    traces = []
    monkeypatch.setattr(gen, "GPTModel", lambda cfg: (traces.append(1), GPTModel(cfg))[1])
    first = generate(GPTModel(CFG), params, [5, 17, 3], 5)  # may trace (a new shape)
    traces.clear()
    size = gen.next_token._cache_size() if hasattr(gen.next_token, "_cache_size") else None
    np.testing.assert_array_equal(generate(GPTModel(CFG), params, [5, 17, 3], 5), first)
    generate(GPTModel(CFG), params, [8, 1, 2, 40], 4)  # same buffer shape, other step count
    other = generate(GPTModel(CFG), init_params(CFG, seed=1), [5, 17, 3], 5)
    assert traces == []
    if size is not None:
        assert gen.next_token._cache_size() == size
    assert not np.array_equal(other, first)  # the weights are arguments, not constants


def test_generate_text_decodes_the_generated_ids(params):
    class Chars:  # a stand-in tokenizer: one id per character
        def encode(self, text, allowed_special=()):
            return [ord(c) % CFG.vocab_size for c in text]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    text = generate_text(GPTModel(CFG), params, Chars(), "hi", max_new_tokens=3)
    assert text == Chars().decode(plain_greedy(params, Chars().encode("hi"), 3)[0].tolist())


def test_bad_input_is_refused(params):
    with pytest.raises(ValueError, match="T >= 1"):
        generate(GPTModel(CFG), params, [], 3)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        generate(GPTModel(CFG), params, [1], -1)
    head = dataclasses.replace(CFG, num_classes=2)
    with pytest.raises(ValueError, match="needs a language model"):
        generate(GPTModel(head), init_params(head), [1], 1)
    np.testing.assert_array_equal(generate(GPTModel(CFG), params, [4, 2], 0), [4, 2])
