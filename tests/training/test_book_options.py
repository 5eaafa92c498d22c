"""The book's experiment knobs: trainable presets, LoRA, pools, causal mask off,
gradient accumulation, learning-rate schedules, best-epoch selection, early stopping."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from training_helpers import train_with_checkpoints

from gpt2_jax.data.encoding import encode
from gpt2_jax.finetune.config import SpeedConfig
from gpt2_jax.finetune.job import TrainingJob, TrainingPlan, train_classifier
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, init_params, merge_lora
from gpt2_jax.model.pooling import classify, pool_logits
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.optim import freeze, make_optimizer
from gpt2_jax.training.partition import Partition, resolve_trainable
from gpt2_jax.training.train import Batch, Trainer, best_epoch, evaluate
from gpt2_jax.util.tree import named_leaves, path_name

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=3, num_classes=2
)
LORA = dataclasses.replace(CFG, lora_rank=2, lora_alpha=4.0)
BLOCK = 64 + (32 * 96 + 96) + (32 * 32 + 32) + 64 + (32 * 128 + 128) + (128 * 32 + 32)
HEAD, LN_F = 32 * 2 + 2, 64
LORA_BLOCK = (32 * 2 + 2 * 96) + (32 * 2 + 2 * 32) + (32 * 2 + 2 * 128) + (128 * 2 + 2 * 32)


def _data(seed, n, length=40):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, length, n)
    labels = rng.integers(0, 2, n)
    tokens = [
        [7 if y else 9] + rng.integers(0, 499, m - 1).tolist() for m, y in zip(lengths, labels)
    ]
    return encode(tokens, labels, 48)


def _randomised(params, seed=0, scale=0.2):
    """Every leaf moved off its init (LoRA's B = 0 and unit LayerNorms hide errors)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: a + scale * rng.standard_normal(a.shape).astype(np.float32), params
    )


@pytest.mark.parametrize(
    "preset, cfg, expected",
    [
        ("last_layer", CFG, HEAD),
        ("last_block", CFG, BLOCK + LN_F + HEAD),
        ("last_two_blocks", CFG, 2 * BLOCK + LN_F + HEAD),
        ("all", CFG, None),
        ("lora", LORA, 3 * LORA_BLOCK + HEAD),
    ],
)
def test_presets_train_exactly_their_leaves(preset, cfg, expected):
    params = init_params(cfg, seed=1)
    part = Partition.from_patterns(params, resolve_trainable([preset], cfg.n_layers))
    total = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    assert part.counts["trainable"] == (total if expected is None else expected)
    data = {"train": _data(1, 32), "test": _data(2, 8)}
    tc = TrainConfig(batch_size=8, epochs=1, lr=1e-2, trainable=(preset,))
    trained, _ = train_classifier(
        TrainingJob(
            TrainingPlan(data, ("a", "b"), tc, SpeedConfig(), "last-real", np.ones(2, np.float32)),
            GPTModel(cfg),
            part,
        ),
        jax.tree.map(jnp.array, params),
    )
    before, after = named_leaves(params), named_leaves(trained)
    for name in before:
        same = np.array_equal(np.asarray(before[name]), np.asarray(after[name]))
        assert same == (name not in part.names), f"{preset}: {name} changed: {not same}"


def test_lora_starts_as_the_base_model_and_merges_exactly():
    base = _randomised(init_params(CFG, seed=3))
    with_lora = init_params(LORA, seed=3)
    names = named_leaves(with_lora)
    assert {n.rsplit("/", 1)[1] for n in names if "lora" in n} == {"lora_a", "lora_b"}
    assert all(not np.asarray(v).any() for n, v in names.items() if n.endswith("lora_b"))
    flat = named_leaves(base)  # the base weights, plus the fresh adapters
    fresh = jax.tree_util.tree_map_with_path(
        lambda path, leaf: flat.get(path_name(path), leaf), with_lora
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 500, (3, 20)).astype(np.int32)
    lengths = jnp.asarray([20, 9, 1])
    plain = GPTModel(CFG).apply({"params": base}, ids)
    np.testing.assert_array_equal(GPTModel(LORA).apply({"params": fresh}, ids), plain)
    trained = _randomised(fresh, seed=4, scale=0.3)  # adapters (and all) moved
    merged, merged_cfg = merge_lora(trained, LORA)
    assert merged_cfg.lora_rank == 0 and not any("lora" in n for n in named_leaves(merged))
    for pool in ("last", "last-real", "first", "mean"):
        a = classify(GPTModel(LORA), trained, ids, lengths, pool)
        b = classify(GPTModel(merged_cfg), merged, ids, lengths, pool)
        full = classify(GPTModel(LORA), trained, ids, lengths, pool, pooled_only=False)
        np.testing.assert_allclose(a, full, atol=1e-5, rtol=0)  # absorbed path with LoRA
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
        assert (
            np.abs(
                np.asarray(a) - np.asarray(classify(GPTModel(CFG), base, ids, lengths, pool))
            ).max()
            > 1e-3
        )


def test_lora_in_the_last_blocks_keeps_the_prefix():
    cfg = dataclasses.replace(LORA, lora_blocks=1)
    params = init_params(cfg, seed=0)
    assert not any("lora" in n for n in named_leaves(params) if not n.startswith("h2/"))
    part = Partition.from_patterns(params, resolve_trainable(["lora"], cfg.n_layers))
    assert part.first_block(cfg.n_layers) == 2


@pytest.mark.parametrize("pool", ["first", "mean", "last-real"])
def test_pools_equal_the_full_computation(pool):
    """Logits and gradients: pooled-only last block (single-position pools) and the
    full path on cached hidden states against the whole model on token ids."""
    params = _randomised(init_params(CFG, seed=5))
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 500, (4, 24)).astype(np.int32)
    lengths = jnp.asarray([24, 3, 11, 1])
    labels = jnp.asarray([0, 1, 1, 0])
    model = GPTModel(CFG)
    hidden = model.apply({"params": params}, ids, stop=2)

    def loss(p, fast):
        if fast:
            logits = classify(model, p, hidden, lengths, pool, start=2)
        else:
            logits = pool_logits(model.apply({"params": p}, ids), lengths, pool)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    np.testing.assert_allclose(loss(params, True), loss(params, False), atol=1e-6)
    g_fast = jax.grad(loss)(params, True)["h2"]
    g_full = jax.grad(loss)(params, False)["h2"]
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_full)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    if pool != "mean":  # cut to a text's own length: the same logits (causal mask)
        short = classify(model, params, ids[1:2, :3], lengths[1:2], pool)
        np.testing.assert_allclose(
            short, classify(model, params, ids, lengths, pool)[1:2], atol=1e-5
        )


def test_without_the_causal_mask_tokens_see_the_future():
    cfg = dataclasses.replace(CFG, causal=False)
    params = _randomised(init_params(cfg, seed=6))
    ids = np.random.default_rng(2).integers(0, 500, (2, 16)).astype(np.int32)
    lengths = jnp.asarray([16, 16])
    changed = ids.copy()
    changed[:, 10] += 1
    for c, expect_change in ((cfg, True), (CFG, False)):
        a = GPTModel(c).apply({"params": params}, ids)[:, 0]
        b = GPTModel(c).apply({"params": params}, changed)[:, 0]
        assert (np.abs(np.asarray(a - b)).max() > 1e-4) == expect_change
    for pool in ("first", "last-real", "last"):
        np.testing.assert_allclose(
            classify(GPTModel(cfg), params, ids, lengths, pool),
            classify(GPTModel(cfg), params, ids, lengths, pool, pooled_only=False),
            atol=1e-5,
        )


def test_accumulated_batches_give_the_update_of_one_larger_batch():
    params = init_params(CFG, seed=7)
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 500, (8, 16)).astype(np.int32)
    lengths, labels = np.full(8, 16, np.int32), rng.integers(0, 2, 8).astype(np.int32)
    frozen = part.frozen(params)
    results = []
    for k, rows in ((1, [slice(0, 8)]), (4, [slice(i, i + 2) for i in range(0, 8, 2)])):
        tx = freeze(make_optimizer(1e-2, 0.1, accumulation_steps=k), part.labels)
        trainer = Trainer(GPTModel(CFG), tx, np.ones(2), pool="last", seed=0)
        state = trainer.init(jax.tree.map(jnp.array, part.trainable(params)), frozen)
        for r in rows:
            state, _ = trainer.train_step(state, frozen, Batch(ids[r], lengths[r], labels[r]))
        results.append(state.trainable)
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), results[0], part.trainable(params))
    assert max(jax.tree.leaves(moved)) > 1e-3
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=0)


def test_schedules_warm_up_from_zero_and_decay_to_zero():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 0.5)}
    for schedule in ("constant", "linear", "cosine"):
        tx = make_optimizer(0.1, 0.0, schedule=schedule, warmup_steps=2, updates=5)
        state, sizes = tx.init(params), []
        for _ in range(6):
            updates, state = tx.update(grads, state, params)
            sizes.append(float(jnp.abs(updates["w"]).max()))
        assert sizes[0] == 0.0 and sizes[1] > 0  # warm-up starts at 0
        if schedule == "constant":
            assert sizes[2] == pytest.approx(sizes[5], rel=1e-4) and sizes[2] > sizes[1]
        else:
            assert sizes[2] > sizes[3] > sizes[4] and sizes[5] == 0.0


def test_best_epoch_by_hand():
    h = [
        {"epoch": e, "val": {"loss": l, "accuracy": a, "macro_f1": f}}
        for e, l, a, f in (
            (1, 0.9, 0.5, 0.4),
            (2, 0.4, 0.7, 0.7),
            (3, 0.5, 0.8, 0.7),
            (4, float("nan"), 0.8, 0.6),
        )
    ]
    assert best_epoch(h, "last") == 4
    assert best_epoch(h, "val_loss") == 2  # NaN never wins
    assert best_epoch(h, "val_accuracy") == 3  # the earliest of equals
    assert best_epoch(h, "val_macro_f1") == 2


@pytest.mark.slow
def test_selected_epoch_is_the_one_returned_and_patience_stops():
    params = init_params(CFG, seed=8)
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))
    data = {"train": _data(3, 48), "val": _data(4, 16), "test": _data(5, 16)}
    tc = TrainConfig(batch_size=8, epochs=6, lr=3e-2, select_by="val_loss", patience=2)
    model = GPTModel(CFG)
    trained, history = train_classifier(
        TrainingJob(
            TrainingPlan(data, ("a", "b"), tc, SpeedConfig(), "last-real", np.ones(2, np.float32)),
            model,
            part,
        ),
        jax.tree.map(jnp.array, params),
    )
    chosen = best_epoch(history, "val_loss")
    last = history[-1]["epoch"]
    assert last == 6 or last - chosen == 2  # stopped exactly when patience ran out
    for e in range(1, last):  # ... and not before
        assert e - best_epoch(history[:e], "val_loss") < 2
    trainer = Trainer(model, make_optimizer(1e-3, 0.0), np.ones(2), pool="last-real", seed=0)
    again = evaluate(
        trainer,
        part.trainable(trained),
        part.frozen(trained),
        data["val"].ids,
        data["val"],
        8,
        ("a", "b"),
    )
    assert again["loss"] == pytest.approx(history[chosen - 1]["val"]["loss"], abs=1e-5)


def test_ignore_index_leaves_that_class_out_of_the_loss():
    from gpt2_jax.training.loss import weighted_cross_entropy

    rng = np.random.default_rng(9)
    logits = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)
    labels = jnp.asarray([0, 2, 1, 2, 0, 1])
    w = jnp.asarray([1.0, 2.0, 0.5])
    keep = np.asarray(labels) != 2
    expected = weighted_cross_entropy(logits[keep], labels[keep], w)
    np.testing.assert_allclose(
        weighted_cross_entropy(logits, labels, w, ignore_index=2), expected, rtol=1e-6
    )
    # the book's row 18: an id that is no class changes nothing
    np.testing.assert_allclose(
        weighted_cross_entropy(logits, labels, w, ignore_index=50256),
        weighted_cross_entropy(logits, labels, w),
        rtol=1e-7,
    )


def test_clipping_bounds_the_gradient_adam_sees():
    params = {"w": jnp.zeros(4)}
    grads = {"w": jnp.asarray([3e-9, -4e-9, 0.0, 0.0])}  # norm 5e-9, near Adam's eps
    sizes = {}
    for clip in (0.0, 1e-9):
        tx = make_optimizer(1.0, 0.0, clip_norm=clip)
        updates, _ = tx.update(grads, tx.init(params), params)
        sizes[clip] = float(jnp.abs(updates["w"]).max())
    # Adam's first step is lr * g / (|g| + eps): clipping g to a fifth shrinks it
    assert sizes[1e-9] < 0.5 * sizes[0.0]


def test_settings_that_cannot_work_are_refused_before_training():
    from gpt2_jax.finetune.config import ModelConfig, OutputConfig, RunConfig
    from gpt2_jax.finetune.job import check_schedule

    with pytest.raises(ValueError, match="--accumulation-steps 9 is more than the 8 batches"):
        check_schedule(TrainConfig(accumulation_steps=9), 8, 10)
    with pytest.raises(ValueError, match="--warmup-steps 16 is not below the run's 16"):
        check_schedule(TrainConfig(epochs=2, warmup_steps=16, lr_schedule="cosine"), 8, 10)
    with pytest.raises(ValueError, match="--select-by val_loss needs a validation split"):
        check_schedule(TrainConfig(select_by="val_loss"), 8, 0)
    check_schedule(
        TrainConfig(epochs=4, warmup_steps=15, accumulation_steps=2, select_by="val_loss"), 8, 10
    )
    with pytest.raises(ValueError, match="patience needs a validation metric"):
        TrainConfig(patience=2)
    with pytest.raises(ValueError, match="--trainable lora needs --lora-rank"):
        RunConfig(train=TrainConfig(trainable=("lora",)))
    with pytest.raises(ValueError, match="--merge-lora and --lora-blocks need"):
        RunConfig(output=OutputConfig(merge_lora=True))
    with pytest.raises(ValueError, match="--lora-blocks 3: the model has only 2 blocks"):
        ModelConfig(lora_rank=2, lora_blocks=3).gpt_config(
            {"n_vocab": 10, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 2}, 2
        )


@pytest.mark.slow
def test_resume_after_an_early_stop_trains_no_further(tmp_path):

    params = init_params(CFG, seed=8)
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))
    data = {"train": _data(3, 48), "val": _data(4, 16), "test": _data(5, 16)}
    # lr so high that validation loss soon stops improving: patience 1 stops early
    tc = TrainConfig(batch_size=8, epochs=8, lr=0.3, select_by="val_loss", patience=1)

    def fit(resume):
        plan = TrainingPlan(
            data, ("a", "b"), tc, SpeedConfig(), "last-real", np.ones(2, np.float32)
        )
        job = TrainingJob(plan, GPTModel(CFG), part)
        copy = jax.tree.map(jnp.array, params)  # the step donates the trainable leaves
        return train_with_checkpoints(job, copy, tmp_path / "ckpt", keep=2, resume=resume)

    first, history = fit(False)
    assert len(history) < tc.epochs  # it did stop early
    again, history_again = fit(True)
    assert len(history_again) == len(history)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)  # the same selected weights
