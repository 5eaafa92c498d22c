"""Predictions through packed rows (classifier.packed) equal the unpacked path and the
forward of each text alone, for every pool that reads only real tokens, with LoRA, for
texts of very different lengths (one longer than a packed row) and repeats."""

import dataclasses

import jax
import numpy as np
import pytest

from gpt2_jax.classifier.classifier import Classifier, _probs
from gpt2_jax.classifier.packed import bucketed_slots, packed_slots
from gpt2_jax.classifier.spec import ClassifierConfig
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.training.prefix import PACK_WIDTHS

CFG = GPTConfig(
    vocab_size=300, context_length=128, emb_dim=32, n_heads=4, n_layers=3, num_classes=3
)
FULL = 100  # max_length: wider than the narrowest packed row (64)
LORA = dataclasses.replace(CFG, lora_rank=2, lora_alpha=4.0, lora_blocks=2)


def _data(seed=0):
    """Encoded texts [N, FULL] of lengths 1 .. FULL (one longer than a 64-token row,
    several repeated), padded with zeros."""
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([[1, 2, FULL, 90, 70, 65, 64, 63], rng.integers(1, 40, 30)])
    ids = np.zeros((len(lengths), FULL), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, CFG.vocab_size, n)
    repeat = [3, 10, 10, 0]  # rows copied to the end: repeats of earlier texts
    return np.concatenate([ids, ids[repeat]]), np.concatenate([lengths, lengths[repeat]])


def _params(cfg, seed=1):
    params = init_params(cfg, seed=seed)
    key = jax.random.PRNGKey(seed + 1)
    return jax.tree_util.tree_map_with_path(  # adapters that change something
        lambda path, x: (
            jax.random.normal(jax.random.fold_in(key, hash(str(path)) % 997), x.shape) * 0.1
            if "lora_b" in str(path)
            else x
        ),
        params,
    )


def _alone(cfg, params, ids, lengths, pool):
    """Each text's own forward in a row of its own (what follows its end is padding,
    which the causal mask hides from its tokens), read as ``pool`` says."""
    logits = np.asarray(jax.jit(lambda p, x: GPTModel(cfg).apply({"params": p}, x))(params, ids))
    rows = []
    for row, n in zip(logits, lengths):
        pooled = {"last-real": row[n - 1], "first": row[0], "mean": row[:n].mean(0)}[pool]
        rows.append(jax.nn.softmax(pooled))
    return np.stack(rows)


@pytest.mark.parametrize("cfg", [CFG, LORA], ids=["plain", "lora"])
@pytest.mark.parametrize("pool", ["last-real", "first", "mean"])
def test_packed_equals_unpacked_and_each_text_alone(cfg, pool):
    ids, lengths = _data()
    params = _params(cfg)
    packed = _probs(cfg, params, ids, lengths, pool, batch_size=4)
    unpacked = _probs(cfg, params, ids, lengths, pool, batch_size=4, packed=False)
    np.testing.assert_allclose(packed, unpacked, atol=1e-5)
    np.testing.assert_allclose(packed, _alone(cfg, params, ids, lengths, pool), atol=1e-5)
    assert np.all(packed[-4:] == packed[[3, 10, 10, 0]])  # repeats: the same numbers


def test_packed_computes_little_more_than_the_real_tokens():
    ids, lengths = _data()
    first = np.unique(ids, axis=0, return_index=True)[1]
    lengths = lengths[np.sort(first)]
    slots = packed_slots(lengths, FULL, batch_size=4)
    assert lengths.sum() <= slots < bucketed_slots(lengths, FULL, batch_size=4)
    assert min(PACK_WIDTHS) < lengths.max()  # one text needs a row of the full width


def test_classifier_predict_goes_through_packed_rows(monkeypatch, bpe_dir):
    """``Classifier.predict`` with a pool that reads only real tokens uses packed rows
    (the unpacked path is never called) and keeps its outputs."""
    import gpt2_jax.classifier.classifier as clf
    from gpt2_jax.data.tokenizer import get_tokenizer

    cfg = dataclasses.replace(CFG, vocab_size=50257)
    spec = ClassifierConfig(model=cfg, labels=("a", "b", "c"), pool="mean", max_length=FULL)
    classifier = Classifier(spec, init_params(cfg, seed=2), get_tokenizer(bpe_dir))
    texts = ["short", "a somewhat longer text about invoices " * 20, "short", "ok then"]
    want = classifier.predict(texts, batch_size=2)
    monkeypatch.setattr(clf, "class_probs", None)  # the unpacked path would fail here
    got = classifier.predict(texts, batch_size=2)
    np.testing.assert_array_equal(got.probs, want.probs)
    assert got.labels == want.labels and got.truncated.tolist() == [False, True, False, False]
