import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gpt2_jax.config import GPTConfig
from gpt2_jax.model import GPTModel, init_params
from gpt2_jax.pooling import pool_logits
from gpt2_jax.train import (class_weights_for, default_trainable, make_optimizer, make_steps,
                            split_counts, trainable_labels, weighted_cross_entropy)
from gpt2_jax.tree import named_leaves

CFG = GPTConfig(vocab_size=300, context_length=16, emb_dim=16, n_heads=2, n_layers=3,
                num_classes=2)


def test_weighted_loss_equals_hand_computation():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5]], np.float32)
    labels = np.array([0, 1, 1, 0])
    weights = np.array([0.5, 3.0], np.float32)
    total, norm = 0.0, 0.0
    for row, y in zip(logits, labels):
        nll = -(row[y] - math.log(sum(math.exp(v) for v in row)))
        total += weights[y] * nll
        norm += weights[y]
    got = float(weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), weights))
    assert got == pytest.approx(total / norm, rel=1e-6)
    torch = pytest.importorskip("torch")  # and PyTorch's weighted mean, as in the lab
    ref = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels),
                                            weight=torch.tensor(weights))
    assert got == pytest.approx(float(ref), rel=1e-6)


def test_class_weights_balance_the_classes():
    labels = np.array([0] * 1726 + [1] * 274)
    w = class_weights_for(labels)
    np.testing.assert_allclose(w, [2000 / (2 * 1726), 2000 / (2 * 274)], rtol=1e-6)
    assert w[0] * 1726 == pytest.approx(w[1] * 274)
    with pytest.raises(ValueError, match=r"lack class\(es\) \[1\]"):
        class_weights_for(np.zeros(10, int))


def test_pooling():
    logits = jnp.arange(2 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 2)
    np.testing.assert_array_equal(pool_logits(logits, jnp.array([1, 3]), "last"), logits[:, -1])
    np.testing.assert_array_equal(pool_logits(logits, jnp.array([1, 3]), "last-real"),
                                  jnp.stack([logits[0, 0], logits[1, 2]]))


def test_labels_from_patterns():
    params = init_params(CFG)
    labels = named_leaves(trainable_labels(params, default_trainable(CFG.n_layers)))
    assert default_trainable(3) == ("h2/.*", "ln_f/.*", "head/.*")
    assert labels["h2/attn/c_attn/kernel"] == labels["ln_f/scale"] == labels["head/bias"] == "trainable"
    assert labels["h1/mlp/c_fc/kernel"] == labels["wte/embedding"] == "frozen"
    counts = split_counts(params, trainable_labels(params, default_trainable(3)))
    e = CFG.emb_dim
    assert counts["trainable"] == 12 * e * e + 13 * e + 2 * e + (2 * e + 2)
    with pytest.raises(ValueError, match=r"\['h9/.\*'\] match no parameter"):
        trainable_labels(params, ["h9/.*", "head/.*"])


@pytest.fixture(scope="module")
def stepped():
    """Three jitted training steps from a known start."""
    params = init_params(CFG, seed=3)
    start = jax.tree.map(np.array, params)
    labels = trainable_labels(params, default_trainable(CFG.n_layers))
    tx = make_optimizer(labels, lr=1e-2, weight_decay=0.1)
    opt_state = tx.init(params)
    steps = make_steps(GPTModel(CFG), tx, "last", np.array([1.0, 2.0], np.float32), seed=0)
    rng = np.random.default_rng(0)
    for step in range(3):
        ids = rng.integers(0, CFG.vocab_size, (4, 8)).astype(np.int32)
        params, opt_state, loss, _, _ = steps.train(params, opt_state, ids, np.full(4, 8, np.int32),
                                                 np.array([0, 1, 0, 1], np.int32), np.int32(step))
    return start, params, opt_state, labels


def test_frozen_leaves_bit_identical_trainable_changed(stepped):
    start, params, _, labels = stepped
    for name, label in named_leaves(labels).items():
        before, after = named_leaves(start)[name], np.asarray(named_leaves(params)[name])
        if label == "frozen":
            np.testing.assert_array_equal(after, before, err_msg=name)
        else:
            assert not np.array_equal(after, before), f"{name} did not change"


def test_frozen_leaves_have_no_optimizer_state(stepped):
    start, _, opt_state, labels = stepped
    counts = split_counts(start, labels)
    state_size = sum(np.size(x) for x in jax.tree.leaves(opt_state))
    # Adam's mu and nu for trainable leaves only, plus a few scalar counters.
    assert 2 * counts["trainable"] <= state_size < 2 * counts["trainable"] + 10
    mu = opt_state.inner_states["trainable"].inner_state[0].mu
    assert isinstance(mu["h0"]["attn"]["c_attn"]["kernel"], optax.MaskedNode)
    assert mu["h2"]["attn"]["c_attn"]["kernel"].shape == (CFG.emb_dim, 3 * CFG.emb_dim)
