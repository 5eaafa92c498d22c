"""Epoch checkpoints check what they read back: digests per leaf, fallback to the newest
intact epoch, a clear error when none is intact."""

import json
import re

import jax
import numpy as np
import pytest
from training_helpers import CFG, collected, train_with_checkpoints
from training_helpers import damage_checkpoint as _damage
from training_helpers import largest_data_file as _largest_data_file
from training_helpers import tiny_data as _data
from training_helpers import tiny_partition as _partition

from gpt2_jax.finetune.config import SpeedConfig
from gpt2_jax.finetune.job import TrainingJob, TrainingPlan
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.training.checkpoints import (
    LEAF_DIGESTS,
    META_DIGEST,
    DamagedCheckpoint,
    EpochCheckpoints,
    run_fingerprints,
    state_digests,
)
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.optim import freeze, make_optimizer
from gpt2_jax.training.train import Trainer

SEED = 3
DATA = {"train": _data(0, 32), "test": _data(1, 8)}  # 4 steps per epoch at batch 8


def _fit(run_dir, epochs, resume=False, lines=None):
    tc = TrainConfig(batch_size=8, epochs=epochs, lr=1e-3)
    params = init_params(CFG, SEED)
    weights = np.array([1.0, 2.0], np.float32)
    plan = TrainingPlan(DATA, ("ham", "spam"), tc, SpeedConfig(), "last", weights)
    job = TrainingJob(plan, GPTModel(CFG), _partition(params))
    return train_with_checkpoints(job, params, run_dir / "ckpt", keep=3, resume=resume, lines=lines)


def _state_like_and_fingerprints():
    params = init_params(CFG, SEED)
    partition = _partition(params)
    tx = freeze(make_optimizer(1e-3, 0.1), partition.labels)
    trainer = Trainer(GPTModel(CFG), tx, np.ones(2), pool="last", seed=0)
    return (
        trainer.init(partition.trainable(params), partition.frozen(params)),
        run_fingerprints(partition.frozen(params), DATA["train"].ids, DATA["train"].labels),
    )


def _strip_times(history):
    """Every epoch's record but its timings, as JSON text (so that NaN equals NaN)."""
    return json.dumps([{k: v for k, v in e.items() if not k.endswith("seconds")} for e in history])


def _flip_silently(ckpt_dir, epoch):
    """Flip 4 bytes in the middle of the epoch's largest array data file, where orbax
    still reads the state back without an error (a value inside a stored chunk, not a
    header): only the digests can tell. Orbax packs the arrays into its files in no fixed
    order, so the first offset from the middle that does this is searched for."""
    like, _ = _state_like_and_fingerprints()
    path = _largest_data_file(ckpt_dir / str(epoch))
    original = path.read_bytes()
    checkpoints = EpochCheckpoints(ckpt_dir, keep=3)
    try:
        for offset in range(len(original) // 2, len(original) - 4, 61):
            data = bytearray(original)
            for i in range(offset, offset + 4):
                data[i] ^= 0xFF
            path.write_bytes(bytes(data))
            try:
                checkpoints.restore(epoch, like)
            except DamagedCheckpoint as err:
                if "differs from the digest" in err.reason:
                    return
            path.write_bytes(original)
    finally:
        checkpoints.close()
    pytest.fail(f"no 4 bytes of {path} flip silently")


def _no_lr_blamed(text):
    return not re.search(r"(?<![A-Za-z])lr(?![A-Za-z])|learning rate", text)


def test_digests_round_trip(tmp_path):
    _fit(tmp_path, epochs=2)
    like, fingerprints = _state_like_and_fingerprints()
    checkpoints = EpochCheckpoints(tmp_path / "ckpt", keep=3)
    try:
        assert checkpoints._manager.all_steps() == [1, 2]
        for epoch in (1, 2):
            restored = checkpoints.restore(epoch, like, fingerprints)
            assert restored.verified and restored.meta["epoch"] == epoch
            assert int(restored.state.step) == 4 * epoch
            assert LEAF_DIGESTS not in restored.meta and META_DIGEST not in restored.meta
            on_disk = json.loads((tmp_path / "ckpt" / str(epoch) / "meta" / "metadata").read_text())
            digests = on_disk[LEAF_DIGESTS]
            assert digests == state_digests(restored.state)
            assert {
                "step",
                "trainable/h1/attn/c_attn/kernel",
                # Adam's first moment, under freeze's (optax.multi_transform) trainable label
                "opt_state/inner_states/trainable/inner_state/0/mu/h1/attn/c_attn/kernel",
            } <= set(digests)
            assert len(digests) == len(jax.tree.leaves(restored.state))
        lines = []
        with collected(lines):
            latest = checkpoints.resume(like, fingerprints)
        assert latest.meta["epoch"] == 2 and latest.skipped == [] and lines == []
        assert state_digests(checkpoints.restore(1, like).state) != digests  # epoch 2's
    finally:
        checkpoints.close()


def test_flipped_bytes_fall_back_and_resume_equals_one_go(tmp_path, capsys):
    whole_params, whole = _fit(tmp_path / "whole", epochs=3)
    _fit(tmp_path / "broken", epochs=2)
    _flip_silently(tmp_path / "broken" / "ckpt", 2)

    lines = []
    resumed_params, resumed = _fit(tmp_path / "broken", epochs=3, resume=True, lines=lines)
    said = "\n".join(lines + [capsys.readouterr().out])  # resume's own log, or the run's
    damaged = [line for line in said.splitlines() if "ckpt/2 is damaged" in line]
    assert damaged, said
    assert "differs from the digest recorded when it was saved" in damaged[0]
    assert "resuming from epoch 1 instead" in damaged[0]
    assert "resuming after epoch 1 (step 4)" in said
    assert _strip_times(resumed) == _strip_times(whole)
    for x, y in zip(jax.tree.leaves(resumed_params), jax.tree.leaves(whole_params)):
        np.testing.assert_array_equal(x, y)

    # epoch 2 was deleted and saved again: it and epoch 3 are intact now
    assert sorted(p.name for p in (tmp_path / "broken" / "ckpt").iterdir()) == ["1", "2", "3"]
    like, fingerprints = _state_like_and_fingerprints()
    checkpoints = EpochCheckpoints(tmp_path / "broken" / "ckpt", keep=3)
    try:
        for epoch in (2, 3):
            assert checkpoints.restore(epoch, like, fingerprints).meta["epoch"] == epoch
    finally:
        checkpoints.close()


def test_every_epoch_damaged_names_them_and_blames_no_lr(tmp_path):
    _fit(tmp_path, epochs=2)
    _damage(tmp_path / "ckpt" / "1", "truncate")
    _damage(tmp_path / "ckpt" / "2", "flip")
    with pytest.raises(ValueError) as err:
        _fit(tmp_path, epochs=3, resume=True)
    message = str(err.value)
    assert "ckpt/1 is damaged" in message and "ckpt/2 is damaged" in message, message
    assert "without --resume" in message and "new run folder" in message
    assert _no_lr_blamed(message), message
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1", "2"]  # kept


@pytest.mark.parametrize(
    "how,reason",
    [
        ("truncate", "state unreadable"),
        ("delete", "state unreadable"),
        ("meta", "meta differs from the digest"),
    ],
)
def test_unreadable_newest_epoch_falls_back(tmp_path, how, reason):
    _fit(tmp_path, epochs=2)
    _damage(tmp_path / "ckpt" / "2", how)
    like, fingerprints = _state_like_and_fingerprints()
    checkpoints = EpochCheckpoints(tmp_path / "ckpt", keep=3)
    try:
        if how != "meta":  # another run's data is refused, not taken for damage
            other = dict(fingerprints, data_fingerprint="0" * 64)
            with pytest.raises(ValueError, match="saved for other training data"):
                checkpoints.resume(like, other)
            assert (tmp_path / "ckpt" / "2").exists()

        lines = []
        with collected(lines):
            restored = checkpoints.resume(like, fingerprints)
        assert restored.meta["epoch"] == 1 and int(restored.state.step) == 4
        assert [epoch for epoch, _ in restored.skipped] == [2]
        assert reason in restored.skipped[0][1]
        assert len(lines) == 1 and "ckpt/2 is damaged" in lines[0], lines
        assert reason in lines[0] and "resuming from epoch 1 instead" in lines[0]
        assert _no_lr_blamed(lines[0])
        assert not (tmp_path / "ckpt" / "2").exists()
        assert checkpoints.latest_epoch() == 1
        assert checkpoints.restore(1, like).verified
    finally:
        checkpoints.close()


def test_checkpoint_without_digests_is_restored_with_a_warning(tmp_path):
    """Saved before digests were recorded: restored unverified, and said so."""
    import orbax.checkpoint as ocp

    like, fingerprints = _state_like_and_fingerprints()
    checkpoints = EpochCheckpoints(tmp_path / "ckpt")
    try:
        checkpoints._manager.save(
            1,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(like._asdict()),
                meta=ocp.args.JsonSave({"epoch": 1, "step": 0, "history": [], **fingerprints}),
            ),
        )
        checkpoints._manager.wait_until_finished()
        lines = []
        with collected(lines):
            restored = checkpoints.resume(like, fingerprints)
        assert restored.meta["epoch"] == 1 and not restored.verified and restored.skipped == []
        assert len(lines) == 1 and "unverified" in lines[0] and "ckpt/1" in lines[0]
    finally:
        checkpoints.close()


def test_saving_an_epoch_not_after_the_latest_is_an_error(tmp_path):
    """Orbax skips such a save without a word (returns False): it must not pass silently."""
    like, _ = _state_like_and_fingerprints()
    checkpoints = EpochCheckpoints(tmp_path / "ckpt")
    try:
        checkpoints.save(2, like, {"epoch": 2})
        with pytest.raises(ValueError, match="epoch 2 was not saved"):
            checkpoints.save(2, like, {"epoch": 2})
        with pytest.raises(ValueError, match="epoch 1 was not saved"):
            checkpoints.save(1, like, {"epoch": 1})
        assert checkpoints.restore(2, like).meta == {"epoch": 2}
    finally:
        checkpoints.close()
