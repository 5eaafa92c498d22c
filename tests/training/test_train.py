import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.model.pooling import pool_logits
from gpt2_jax.training.loss import class_weights, class_weights_for, weighted_cross_entropy
from gpt2_jax.training.optim import freeze, make_optimizer
from gpt2_jax.training.partition import Partition, merge, resolve_trainable
from gpt2_jax.training.train import Batch, Trainer
from gpt2_jax.util.tree import named_leaves

CFG = GPTConfig(vocab_size=300, context_length=16, emb_dim=16, n_heads=2, n_layers=3, num_classes=2)


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
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels), weight=torch.tensor(weights)
    )
    assert got == pytest.approx(float(ref), rel=1e-6)


def test_class_weights_balance_the_classes():
    labels = np.array([0] * 1726 + [1] * 274)
    w = class_weights_for(labels, 2)
    np.testing.assert_allclose(w, [2000 / (2 * 1726), 2000 / (2 * 274)], rtol=1e-6)
    assert w[0] * 1726 == pytest.approx(w[1] * 274)
    three = class_weights_for(np.array([0] * 6 + [1] * 3 + [2]), 3)
    np.testing.assert_allclose(three, [10 / 18, 10 / 9, 10 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match=r"lack class\(es\) \[1\]"):
        class_weights_for(np.zeros(10, int), 2)


def test_class_weight_specs_by_name():
    labels, names = np.array([0, 0, 0, 1, 2]), ("billing", "bug", "praise")
    np.testing.assert_array_equal(class_weights("none", labels, names), [1, 1, 1])
    np.testing.assert_allclose(class_weights("balanced", labels, names), [5 / 9, 5 / 3, 5 / 3])
    np.testing.assert_array_equal(
        class_weights("praise=3,billing=1,bug=2.5", labels, names), [1, 2.5, 3]
    )
    with pytest.raises(ValueError, match=r"no class named \['bugs'\]; no weight for \['bug'\]"):
        class_weights("billing=1,bugs=2,praise=1", labels, names)
    with pytest.raises(ValueError, match="NAME=POSITIVE_NUMBER"):
        class_weights("billing=-1,bug=1,praise=1", labels, names)


def test_pooling():
    logits = jnp.arange(2 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 2)
    np.testing.assert_array_equal(pool_logits(logits, jnp.array([1, 3]), "last"), logits[:, -1])
    np.testing.assert_array_equal(
        pool_logits(logits, jnp.array([1, 3]), "last-real"), jnp.stack([logits[0, 0], logits[1, 2]])
    )


def test_partition_from_patterns_and_presets():
    params = init_params(CFG)
    assert resolve_trainable(["last_block"], 3) == ("h2/.*", "ln_f/.*", "head/.*")
    assert resolve_trainable(["auto"], 3, pretrained=False) == (".*",)
    assert resolve_trainable(["auto", "h0/ln_1/.*"], 3) == (
        "h2/.*",
        "ln_f/.*",
        "head/.*",
        "h0/ln_1/.*",
    )
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], 3))
    assert {"h2/attn/c_attn/kernel", "ln_f/scale", "head/bias"} <= part.names
    assert not {"h1/mlp/c_fc/kernel", "wte/embedding"} & part.names
    e = CFG.emb_dim
    assert part.counts["trainable"] == 12 * e * e + 13 * e + 2 * e + (2 * e + 2)
    assert sum(part.counts.values()) == sum(np.size(x) for x in jax.tree.leaves(params))
    assert set(named_leaves(part.trainable(params))) == part.names
    assert not set(named_leaves(part.frozen(params))) & part.names
    assert (
        named_leaves(merge(part.frozen(params), part.trainable(params))).keys()
        == named_leaves(params).keys()
    )
    assert part.first_block(3) == 2
    assert Partition.from_patterns(params, ["ln_f/.*", "head/.*"]).first_block(3) == 3
    assert Partition.from_patterns(params, ["h1/mlp/.*", "head/.*"]).first_block(3) == 1
    assert Partition.from_patterns(params, ["wpe/.*", "head/.*"]).first_block(3) == 0
    with pytest.raises(ValueError, match=r"\['h9/.\*'\] match no parameter"):
        Partition.from_patterns(params, ["h9/.*", "head/.*"])
    with pytest.raises(ValueError, match=r"--trainable 'h1/\(' is neither a preset"):
        resolve_trainable(["h1/("], 3)


@pytest.fixture(scope="module")
def stepped():
    """Three jitted training steps from a known start."""
    params = init_params(CFG, seed=3)
    start = jax.tree.map(np.array, params)
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))
    trainer = Trainer(
        GPTModel(CFG),
        freeze(make_optimizer(1e-2, 0.1), part.labels),
        np.array([1.0, 2.0]),
        pool="last",
        seed=0,
    )
    frozen = part.frozen(params)
    state = trainer.init(part.trainable(params), frozen)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ids = rng.integers(0, CFG.vocab_size, (4, 8)).astype(np.int32)
        state, metrics = trainer.train_step(
            state, frozen, Batch(ids, np.full(4, 8, np.int32), np.array([0, 1, 0, 1], np.int32))
        )
        assert bool(metrics["finite"])
    return start, merge(frozen, state.trainable), state, part


def test_frozen_leaves_bit_identical_trainable_changed(stepped):
    start, params, state, part = stepped
    assert int(state.step) == 3
    for name, before in named_leaves(start).items():
        after = np.asarray(named_leaves(params)[name])
        if name in part.names:
            assert not np.array_equal(after, before), f"{name} did not change"
        else:
            np.testing.assert_array_equal(after, before, err_msg=name)


def test_optimizer_state_holds_trainable_leaves_only(stepped):
    _, _, state, part = stepped
    state_size = sum(np.size(x) for x in jax.tree.leaves(state.opt_state))
    # Adam's mu and nu for trainable leaves only, plus a scalar counter.
    assert 2 * part.counts["trainable"] <= state_size < 2 * part.counts["trainable"] + 10
    adam = state.opt_state.inner_states["trainable"].inner_state  # freeze's trainable label
    mu = adam[0].mu
    assert set(named_leaves(mu)) == part.names


@pytest.mark.slow
def test_uncached_step_differentiates_only_the_trainable_tree():
    """XLA's own FLOP count of the compiled steps at 124M, batch 16 x 257 tokens
    (abstract shapes: nothing is allocated). Training only the last block, the step
    costs little more than its forward pass; back-propagating into every frozen block
    would make it about 3x."""
    cfg = GPTConfig.from_size("124M", num_classes=2)
    shapes = jax.eval_shape(lambda: init_params(cfg))
    part = Partition.from_patterns(shapes, resolve_trainable(["last_block"], cfg.n_layers))
    trainer = Trainer(
        GPTModel(cfg),
        freeze(make_optimizer(5e-5, 0.1), part.labels),
        np.ones(2),
        pool="last",
        seed=0,
        pooled_only=False,
    )
    state = jax.eval_shape(trainer.init, part.trainable(shapes), part.frozen(shapes))
    batch = Batch(
        jax.ShapeDtypeStruct((16, 257), jnp.int32),
        jax.ShapeDtypeStruct((16,), jnp.int32),
        jax.ShapeDtypeStruct((16,), jnp.int32),
    )

    def flops(fn, *args):
        cost = fn.lower(*args).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    step = flops(trainer.train_step, state, part.frozen(shapes), batch)
    forward = flops(trainer.eval_step, part.trainable(shapes), part.frozen(shapes), batch)
    assert forward > 5e11  # about 2 x 124M x 16 x 257 multiply-adds, plus attention
    print(
        f"step {step / 1e9:.0f} GFLOP, forward {forward / 1e9:.0f} GFLOP, ratio {step / forward:.3f}"
    )
    assert step <= 1.2 * forward, step / forward


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_frozen_leaves_carry_no_optimizer_state(accumulation_steps):
    """``freeze`` (optax.multi_transform): Adam's two moments, and with accumulation the
    summed gradients, exist for each trainable parameter and for no frozen one."""
    params = init_params(CFG, seed=3)
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))
    tx = make_optimizer(1e-2, 0.1, clip_norm=1.0, accumulation_steps=accumulation_steps)
    state = freeze(tx, part.labels).init(params)
    arrays = {n: x for n, x in named_leaves(state).items() if np.ndim(x) > 0}
    per_param = 2 + (accumulation_steps > 1)
    assert sum(np.size(x) for x in arrays.values()) == per_param * part.counts["trainable"]
    top = {n.split("/")[0] for n in part.names}  # h2, ln_f, head
    for name in arrays:  # every state array sits under a trainable scope
        assert any(f"/{t}/" in f"/{name}/" for t in top), name
