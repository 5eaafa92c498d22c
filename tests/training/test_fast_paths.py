"""The speed-ups are exact: same logits, gradients and metrics as the plain computation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from training_helpers import collected

from gpt2_jax.data.batches import bucket_length
from gpt2_jax.data.encoding import encode
from gpt2_jax.finetune.config import SpeedConfig
from gpt2_jax.finetune.job import TrainingJob, TrainingPlan, train_classifier
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.model.pooling import pool_logits, pool_positions
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.loss import weighted_cross_entropy
from gpt2_jax.training.partition import Partition, resolve_trainable
from gpt2_jax.training.prefix import compute_prefix

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=3, num_classes=2
)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    lengths = np.array([5, 40, 17, 1], np.int32)
    ids = rng.integers(0, CFG.vocab_size, (4, 48)).astype(np.int32)
    for row, n in zip(ids, lengths):
        row[n:] = 499
    return ids, lengths, np.array([0, 1, 1, 0], np.int32)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=5)


@pytest.mark.parametrize("pool", ["last", "last-real"])
def test_pooled_only_equals_full_logits_and_gradients(params, batch, pool):
    ids, lengths, labels = batch
    model = GPTModel(CFG)
    index = pool_positions(jnp.asarray(lengths), ids.shape[1], pool)
    weights = jnp.array([1.0, 3.0])

    def full(p):
        return pool_logits(model.apply({"params": p}, ids), jnp.asarray(lengths), pool)

    def pooled(p):
        return model.apply({"params": p}, ids, pool_index=index)

    np.testing.assert_allclose(pooled(params), full(params), atol=1e-5, rtol=0)
    g_full = jax.grad(lambda p: weighted_cross_entropy(full(p), labels, weights))(params)
    g_pool = jax.grad(lambda p: weighted_cross_entropy(pooled(p), labels, weights))(params)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_pool)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(g_pool["h0"]))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_prefix_then_rest_equals_whole(params, batch, k):
    ids, lengths, _ = batch
    model = GPTModel(CFG)
    whole = model.apply({"params": params}, ids)
    hidden = model.apply({"params": params}, ids, stop=k) if k else ids
    rest = model.apply({"params": params}, hidden, start=k)
    np.testing.assert_allclose(rest, whole, atol=1e-5, rtol=0)
    index = jnp.asarray(lengths - 1)
    pooled = model.apply({"params": params}, hidden, start=k, pool_index=index)
    np.testing.assert_allclose(pooled, whole[np.arange(4), lengths - 1], atol=1e-5, rtol=0)


def test_bucketed_prefix_agrees_on_real_positions(params, batch):
    ids, lengths, _ = batch
    full = compute_prefix(CFG, params, ids, lengths, 2, batch_size=2)
    bucketed = compute_prefix(CFG, params, ids, lengths, 2, batch_size=2, bucketed=True)
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(bucketed[row, :n], full[row, :n], atol=1e-5, rtol=0)
    mixed = compute_prefix(CFG, params, ids, lengths, 2, batch_size=2, matmul_dtype="bfloat16")
    diff = np.abs(mixed - full).max()
    assert 0 < diff < 0.1 * np.abs(full).max()  # close, not equal


def test_bucket_length():
    assert bucket_length(5, 257) == 32 and bucket_length(33, 257) == 64
    assert bucket_length(250, 257) == 256 and bucket_length(257, 257) == 257


def _data(seed, n):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 40, n)
    labels = rng.integers(0, 2, n)
    # spam-like messages start with token 7, so there is something to learn
    tokens = [
        [7 if y else 9] + rng.integers(0, 499, m - 1).tolist() for m, y in zip(lengths, labels)
    ]
    return encode(tokens, labels, 48)


def _train(params, data, pool, speed, **kwargs):
    tc = TrainConfig(batch_size=8, epochs=2, lr=1e-3)
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))
    # the step donates the trainable leaves, so each run gets a copy
    return train_classifier(
        TrainingJob(
            TrainingPlan(data, ("a", "b"), tc, speed, pool, np.array([1.0, 1.5], np.float32)),
            GPTModel(CFG),
            part,
        ),
        jax.tree.map(jnp.array, params),
        **kwargs,
    )


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["last", "last-real", "first", "mean"])
def test_cached_training_matches_the_plain_path(params, pool, tmp_path):
    data = {"train": _data(1, 64), "test": _data(2, 24)}
    plain = SpeedConfig(prefix_cache=False, pooled_only=False, buckets=False)
    p_fast, h_fast = _train(params, data, pool, SpeedConfig())
    p_plain, h_plain = _train(params, data, pool, plain)
    p_disk, h_disk = _train(params, data, pool, SpeedConfig(), prefix_disk_dir=tmp_path / "p")
    assert len(list((tmp_path / "p").glob("prefix-*.npy"))) == 2  # train and test
    strip = lambda h: json.dumps(
        [
            {k: v for k, v in e.items() if "seconds" not in k}  # noqa
            for e in h
        ]
    )  # as text, so that NaN equals NaN
    assert strip(h_disk) == strip(h_fast)  # memory-mapped inputs: the very same run
    for a, b in zip(h_fast, h_plain):
        assert a["train_step_loss"] == pytest.approx(b["train_step_loss"], abs=1e-5)
        for split in ("train", "test"):
            assert a[split]["loss"] == pytest.approx(b[split]["loss"], abs=1e-5)
            assert a[split]["confusion"] == b[split]["confusion"]
    # Adam divides by sqrt(nu): float noise in near-zero gradients shows up at ~lr * 1e-2
    for x, y in zip(jax.tree.leaves(p_fast), jax.tree.leaves(p_plain)):
        np.testing.assert_allclose(x, y, atol=1e-4, rtol=0)


def test_prefix_cache_on_disk(params, batch, tmp_path):
    from gpt2_jax.training.prefix_cache import cached_prefix, prefix_key

    ids, lengths, _ = batch
    logs = []
    with collected(logs):
        first = cached_prefix(tmp_path, CFG, params, ids, lengths, 2)
        again = cached_prefix(tmp_path, CFG, params, ids, lengths, 2)
    cache_lines = [line for line in logs if " batches (" not in line]  # not progress lines
    assert "saved to" in cache_lines[0] and "reusing" in cache_lines[1]
    np.testing.assert_array_equal(again, first)
    assert len(list(tmp_path.glob("prefix-*.npy"))) == 1
    key = prefix_key(CFG, params, ids, lengths, 2, False, None)
    head_changed = jax.tree.map(lambda a: a, params)
    head_changed["head"] = {"kernel": params["head"]["kernel"] + 1, "bias": params["head"]["bias"]}
    assert prefix_key(CFG, head_changed, ids, lengths, 2, False, None) == key  # not read
    frozen_changed = dict(params, h1=jax.tree.map(lambda a: a + 1e-3, params["h1"]))
    assert prefix_key(CFG, frozen_changed, ids, lengths, 2, False, None) != key
    assert prefix_key(CFG, params, ids[:, ::-1].copy(), lengths, 2, False, None) != key
    assert prefix_key(CFG, params, ids, lengths, 2, False, "bfloat16") != key


def test_prefix_progress_is_logged_without_a_terminal(params, batch):
    ids, lengths, _ = batch  # under pytest stderr is not a terminal: no bar, log lines instead
    logs = []
    with collected(logs):
        compute_prefix(CFG, params, ids, lengths, 2, batch_size=1, desc="prefix train")
    assert [line.split(",")[0] for line in logs] == [
        "prefix train: 1/4 batches (25 %)",
        "prefix train: 2/4 batches (50 %)",
        "prefix train: 3/4 batches (75 %)",
        "prefix train: 4/4 batches (100 %)",
    ]


@pytest.mark.parametrize("t, block", [(1, 96), (5, 2), (64, 96), (257, 96), (257, 32), (1024, 96)])
def test_blocked_causal_attention_equals_the_full_square(t, block):
    from gpt2_jax.model.gpt import causal_attention

    rng = np.random.default_rng(t)
    q, k, v = (rng.standard_normal((2, t, 3, 8)).astype(np.float32) for _ in range(3))
    # reference in float64 NumPy: softmax(q k^T / sqrt(D) + causal mask) v
    s = np.einsum("bqhd,bkhd->bhqk", q, k).astype(np.float64) / np.sqrt(8)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    want = np.einsum("bhqk,bkhd->bqhd", w, v)
    got = jax.jit(lambda q, k, v: causal_attention(q, k, v, block=block))(q, k, v)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)


LONG = GPTConfig(
    vocab_size=512, context_length=1024, emb_dim=64, n_heads=4, n_layers=2, num_classes=3
)


@pytest.fixture(scope="module")
def long_params():
    return init_params(LONG, seed=3)


@pytest.mark.parametrize("t", [7, 300, 1024])
def test_pooled_attention_with_absorbed_projections_is_exact(long_params, t):
    """The last block computed for one query per row (keys and values never formed)
    against the whole block read at that row: logits and every gradient, padded rows
    included, on hidden states as the prefix cache gives them."""
    rng = np.random.default_rng(t)
    # every leaf random (LayerNorm scale 1 and zero biases would hide absorption errors)
    params = jax.tree.map(
        lambda a: a + 0.2 * rng.standard_normal(a.shape).astype(np.float32), long_params
    )
    hidden = jnp.asarray(rng.standard_normal((3, t, LONG.emb_dim)), jnp.float32)
    lengths = jnp.asarray([t, max(1, t // 3), 1])  # full, padded, a single token
    labels = jnp.asarray([0, 2, 1])
    model, start = GPTModel(LONG), LONG.n_layers - 1
    weights = jnp.array([1.0, 2.0, 0.5])
    for pool in ("last", "last-real"):
        index = pool_positions(lengths, t, pool)

        def full(p, x):
            return pool_logits(model.apply({"params": p}, x, start=start), lengths, pool)

        def pooled(p, x):
            return model.apply({"params": p}, x, start=start, pool_index=index)

        def logits_and_grads(f):
            """f's logits and the gradients of the loss, compiled as one program."""

            def loss(p, x):
                logits = f(p, x)
                return weighted_cross_entropy(logits, labels, weights), logits

            grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
            g, logits = grad(params, hidden)
            return logits, g

        l_full, g_full = logits_and_grads(full)
        l_pool, g_pool = logits_and_grads(pooled)
        np.testing.assert_allclose(l_pool, l_full, atol=1e-5, rtol=0)
        names = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(g_full)]
        for name, a, b in zip(names, jax.tree.leaves(g_full), jax.tree.leaves(g_pool)):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4, err_msg=f"{pool} {name}")
        assert np.abs(g_pool[0]["h1"]["attn"]["c_attn"]["kernel"]).max() > 0
        assert np.abs(g_pool[0]["h1"]["ln_1"]["scale"]).max() > 0


@pytest.mark.parametrize("widths", [(64, 128), (8, 16)])
def test_packed_prefix_equals_each_text_alone(params, widths, monkeypatch):
    """Texts packed several to a row (segment masks, per-text positions), short texts in
    short rows, repeats computed once: every real position equals the text run alone."""
    from gpt2_jax.training import prefix
    from gpt2_jax.training.prefix import pack_groups, unique_texts

    monkeypatch.setattr(prefix, "PACK_WIDTHS", widths)
    rng = np.random.default_rng(7)
    lengths = np.array([48, 1, 30, 17, 17, 5, 40, 9, 23, 2, 48, 11, 3, 4, 6, 7, 8], np.int32)
    ids = rng.integers(0, CFG.vocab_size, (len(lengths), 48)).astype(np.int32)
    ids[4] = ids[3]  # a repeated text
    ids[11, :9] = ids[7, :9]  # same start, longer: not a repeat
    for row, n in zip(ids, lengths):
        row[n:] = 50256
    first, source = unique_texts(ids, lengths)
    assert source[4] == 3 and 4 not in first and 11 in first
    groups = pack_groups(first, lengths, 48, batch_rows=2)
    placed = np.concatenate([plan.texts for plan, _ in groups])
    assert sorted(placed.tolist()) == sorted(first.tolist())  # each distinct text once
    for i, (plan, rows) in enumerate(groups):
        assert (lengths[plan.texts] <= plan.width).all()
        assert i == len(groups) - 1 or plan.rows % rows == 0  # no part-filled batch
    assert len(groups) == (1 if widths[0] > 48 else 3)
    packed = compute_prefix(CFG, params, ids, lengths, 2, batch_size=2, bucketed=True)
    model = GPTModel(CFG)
    for row, n in enumerate(lengths):
        alone = model.apply({"params": params}, ids[row : row + 1, :n], stop=2)[0]
        np.testing.assert_allclose(packed[row, :n], alone, atol=1e-5, rtol=0)
        assert not packed[row, n:].any()  # past the text: left zero


# ---- jax.nn.dot_product_attention (cuDNN's fused attention on GPUs) ----


@pytest.mark.parametrize("causal, packed", [(True, False), (False, False), (True, True)])
def test_fused_attention_equals_the_blocked_one(causal, packed):
    from gpt2_jax.model.gpt import causal_attention, fused_attention

    rng = np.random.default_rng(7)
    q, k, v = (jnp.asarray(rng.normal(size=(3, 37, 4, 8)), jnp.float32) for _ in range(3))
    segments = (
        jnp.asarray(np.repeat([[0, 1, 2]], 3, 0).repeat([10, 15, 12], axis=1)) if packed else None
    )
    blocked = causal_attention(q, k, v, block=8, segments=segments, causal=causal)
    fused = fused_attention(q, k, v, segments=segments, causal=causal)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(blocked), atol=1e-5, rtol=0)
    loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v, segments=segments, causal=causal) ** 3)
    grads_b = jax.grad(loss(causal_attention), argnums=(0, 1, 2))(q, k, v)
    grads_f = jax.grad(loss(fused_attention), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(grads_f, grads_b):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=0)


def test_model_with_fused_attention_gives_the_same_logits():
    import dataclasses

    cfg = GPTConfig(
        vocab_size=300,
        context_length=40,
        emb_dim=32,
        n_heads=4,
        n_layers=2,
        num_classes=3,
        attention="blocked",
    )
    params = init_params(cfg, seed=2)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 300, size=(2, 40)))
    blocked = GPTModel(cfg).apply({"params": params}, ids)
    fused = GPTModel(dataclasses.replace(cfg, attention="fused")).apply({"params": params}, ids)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(blocked), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="attention must be one of"):
        dataclasses.replace(cfg, attention="flash")


def test_bfloat16_training_keeps_float32_weights_and_stays_close(params):
    data = {"train": _data(1, 64), "test": _data(2, 24)}
    p32, h32 = _train(params, data, "last-real", SpeedConfig())
    p16, h16 = _train(params, data, "last-real", SpeedConfig(train_dtype="bfloat16"))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(p16))  # master weights
    moved = max(
        float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p16), jax.tree.leaves(p32))
    )
    assert 0 < moved < 1e-2  # bfloat16 products: another path, not another result
    for a, b in zip(h16, h32):
        assert a["train_step_loss"] == pytest.approx(b["train_step_loss"], abs=2e-2)
        assert a["test"]["loss"] == pytest.approx(b["test"]["loss"], abs=2e-2)
