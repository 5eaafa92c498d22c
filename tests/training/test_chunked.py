"""Long texts cut into chunks (``--long-texts chunk``): one prediction per document, the
same whether the frozen prefix is cached or not, and equal to its chunks run one by one."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig
from gpt2_jax.data.chunks import Chunking, chunk_starts, encode_chunks
from gpt2_jax.finetune.config import SpeedConfig
from gpt2_jax.finetune.job import TrainingJob, TrainingPlan, train_classifier
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import LAYER_NORM_EPS, GPTModel, init_params
from gpt2_jax.model.pooling import classify
from gpt2_jax.training.chunked import chunked_logits
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.partition import Partition, resolve_trainable

CFG = GPTConfig(
    vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=2, num_classes=3
)


class Digits:
    """A tokenizer for tests: a text of space-separated ids is those ids."""

    def encode(self, text):
        return [int(t) for t in text.split()]


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=3)


def test_chunks_cover_the_document_and_stop_at_the_cap():
    c = Chunking(length=8, stride=5, max_chunks=3)
    assert chunk_starts(8, c).tolist() == [0]
    assert chunk_starts(20, c).tolist() == [0, 5, 10]  # the last one ends at 18 of 20: capped
    assert chunk_starts(15, c).tolist() == [0, 5, 7]  # the last ends at the document's end
    data = encode_chunks([list(range(1, 21)), [1, 2], list(range(1, 16))], [0, 1, 2], c)
    assert len(data) == 3 and data.chunks == 7 and data.spans.tolist() == [0, 3, 4, 7]
    assert (data.truncated, data.chunked) == (1, 2)
    assert data.ids[2, :8].tolist() == list(range(11, 19))


def _by_hand(params, tokens, c: Chunking, pool: str):
    """Probabilities of one document: each chunk run alone, combined here in NumPy."""
    model = GPTModel(CFG)
    read = jax.jit(lambda ids, n: classify(model, params, ids, n, pool))
    hidden = jax.jit(lambda ids: model.apply({"params": params}, ids, stop=CFG.n_layers))
    features, logits = [], []
    for s in chunk_starts(len(tokens), c):
        ids = jnp.asarray([tokens[s : s + c.length]], jnp.int32)
        logits.append(np.asarray(read(ids, jnp.asarray([ids.shape[1]], jnp.int32)))[0])
        h = np.asarray(hidden(ids))[0]
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        normed = (h - mu) / np.sqrt(var + LAYER_NORM_EPS) * params["ln_f"]["scale"]
        normed = normed + params["ln_f"]["bias"]
        features.append(normed[-1] if pool == "last-real" else normed.mean(0))
    if c.pool == "mean":  # the head is linear: the mean of the chunks' logits
        z = np.mean(logits, axis=0)
    else:
        z = np.max(features, axis=0) @ params["head"]["kernel"] + params["head"]["bias"]
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("pool,how", [("last-real", "max"), ("mean", "mean")])
def test_a_long_document_equals_its_chunks_one_by_one(params, pool, how):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 600, 3000).tolist(), rng.integers(0, 600, 20).tolist()]
    c = Chunking(length=32, stride=24, pool=how, max_chunks=200)
    spec = ClassifierConfig(CFG, ("a", "b", "c"), pool, 32, chunking=c)
    pred = Classifier(spec, params, Digits()).predict([" ".join(map(str, d)) for d in docs])
    assert pred.truncated.tolist() == [False, False]
    for got, tokens in zip(pred.probs, docs):
        np.testing.assert_allclose(got, _by_hand(params, tokens, c, pool), atol=1e-5)
    capped = Classifier(spec.__class__(**{**spec.__dict__, "chunking": Chunking(32, 24, how, 4)}),
                        params, Digits())  # fmt: skip
    assert capped.predict([" ".join(map(str, docs[0]))]).truncated.tolist() == [True]


def _documents(seed, n):
    """Documents of 5 to 50 tokens whose class shows in their first token: one or two
    chunks each (a batch of 4 has 4 to 8, so two shapes compile), some cut at two."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    tokens = [[7 + y] + rng.integers(10, 600, rng.integers(4, 50)).tolist() for y in labels]
    return encode_chunks(tokens, labels, Chunking(length=24, stride=16, max_chunks=2))


def _train(params, data, pool, how, speed):
    tc = TrainConfig(batch_size=4, epochs=2, lr=1e-3)
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))
    plan = TrainingPlan(data, ("a", "b", "c"), tc, speed, pool, np.ones(3, np.float32), how)
    return train_classifier(TrainingJob(plan, GPTModel(CFG), part), jax.tree.map(jnp.array, params))


@pytest.mark.parametrize("pool,how", [("last-real", "max")])
def test_chunked_training_with_the_prefix_cache_equals_it_without(params, pool, how):
    data = {"train": _documents(1, 24), "test": _documents(2, 10)}
    assert data["train"].chunked and data["train"].truncated  # some cut, some capped
    plain = SpeedConfig(prefix_cache=False, pooled_only=False, buckets=False)
    p_fast, h_fast = _train(params, data, pool, how, SpeedConfig())
    p_plain, h_plain = _train(params, data, pool, how, plain)
    for a, b in zip(h_fast, h_plain):
        assert a["train_step_loss"] == pytest.approx(b["train_step_loss"], abs=1e-5)
        for split in ("train", "test"):
            assert a[split]["n"] == len(data[split])  # per document, not per chunk
            assert a[split]["loss"] == pytest.approx(b[split]["loss"], abs=1e-5)
            assert a[split]["confusion"] == b[split]["confusion"]
    for x, y in zip(jax.tree.leaves(p_fast), jax.tree.leaves(p_plain)):
        np.testing.assert_allclose(x, y, atol=1e-4, rtol=0)
    # evaluation's batches of documents agree with prediction's (checked above by hand)
    logits = chunked_logits(CFG, p_fast, data["test"], pool, how, 4, padded=False)
    nll = -jax.nn.log_softmax(logits)[np.arange(10), data["test"].labels]
    assert h_fast[-1]["test"]["loss"] == pytest.approx(float(nll.mean()), abs=1e-5)
    assert json.dumps(h_fast)  # the history is plain JSON
