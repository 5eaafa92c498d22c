"""The on-disk prefix cache is reused only when it is intact, and never stops a run."""

import contextlib
import errno
import json
import os
import threading

import numpy as np
import pytest
from training_helpers import collected

from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params
from gpt2_jax.training import prefix_cache
from gpt2_jax.training.prefix import compute_prefix
from gpt2_jax.training.prefix_cache import CacheEntry, cached_prefix, file_sha256, prefix_key

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=3, num_classes=2
)
STOP = 2


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=5)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    lengths = np.array([5, 40, 17, 1], np.int32)
    ids = rng.integers(0, CFG.vocab_size, (4, 48)).astype(np.int32)
    for row, n in zip(ids, lengths):
        row[n:] = 499
    return ids, lengths


@pytest.fixture(scope="module")
def fresh(params, batch):
    """The prefix computed in memory, without any cache."""
    return compute_prefix(CFG, params, *batch, STOP)


@pytest.fixture
def calls(monkeypatch):
    """Counts compute_prefix calls and records the type of the array it wrote into."""
    seen = []

    def counting(*args, out=None, **kwargs):
        seen.append(type(out))
        return compute_prefix(*args, out=out, **kwargs)

    monkeypatch.setattr(prefix_cache, "compute_prefix", counting)
    return seen


def entry_of(folder, params, batch) -> CacheEntry:
    return CacheEntry(folder, prefix_key(CFG, params, *batch, STOP, False, None))


def run(folder, params, batch, logs=None):
    """The cached prefix; ``logs`` (a list) gets what it logs."""
    with collected(logs) if logs is not None else contextlib.nullcontext():
        return cached_prefix(folder, CFG, params, *batch, STOP, desc="prefix train")


def cache_lines(logs):
    return [line for line in logs if " batches (" not in line]  # not progress lines


def test_written_then_reused_without_computing(params, batch, fresh, tmp_path, calls, monkeypatch):
    logs = []
    first = run(tmp_path, params, batch, logs)
    assert calls == [np.memmap]  # computed straight into the file, not into RAM first
    np.testing.assert_array_equal(first, fresh)
    entry = entry_of(tmp_path, params, batch)
    record = json.loads(entry.record.read_text())
    assert record["shape"] == [4, 48, CFG.emb_dim] and record["dtype"] == "<f4"
    assert record["bytes"] == entry.array.stat().st_size
    assert record["sha256"] == file_sha256(entry.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [entry.array.name, entry.record.name]
    )

    monkeypatch.setattr(prefix_cache, "compute_prefix", lambda *a, **k: pytest.fail("recomputed"))
    again = run(tmp_path, params, batch, logs)
    assert cache_lines(logs)[-1].startswith(f"prefix train: reusing {entry.array} (")
    assert "verified in" in cache_lines(logs)[-1]
    np.testing.assert_array_equal(again, fresh)


def zero_data(entry):
    offset = entry.array.stat().st_size - 4 * 32 * 20  # well inside the data, after the header
    with open(entry.array, "r+b") as f:
        f.seek(offset)
        f.write(bytes(2048))


def truncate(entry):
    os.truncate(entry.array, entry.array.stat().st_size // 2)


def zero_header(entry):
    with open(entry.array, "r+b") as f:
        f.write(bytes(16))


def drop_record(entry):
    entry.record.unlink()


def garble_record(entry):
    entry.record.write_text('{"shape": [4, 48')


def wrong_record_shape(entry):
    record = json.loads(entry.record.read_text())
    entry.record.write_text(json.dumps(dict(record, shape=[4, 48, 16])))


def other_array_same_size(entry):
    """A well-formed array of another shape (same byte size) with a record that matches it
    byte for byte but claims the expected shape: only the header check can refuse it."""
    np.save(entry.array, np.ones((4, 32, 48), np.float32))
    record = json.loads(entry.record.read_text())
    entry.record.write_text(
        json.dumps(dict(record, bytes=entry.array.stat().st_size, sha256=file_sha256(entry.array)))
    )


@pytest.mark.parametrize(
    "damage, said",
    [
        (zero_data, "checksum differs from the one recorded"),
        (truncate, "truncated"),
        (zero_header, "unreadable header"),
        (drop_record, "is missing"),
        (garble_record, "is unreadable"),
        (wrong_record_shape, "its record says shape (4, 48, 16)"),
        (other_array_same_size, "its header says shape (4, 32, 48)"),
    ],
)
def test_damaged_entry_is_named_recomputed_and_replaced(
    params, batch, fresh, tmp_path, calls, damage, said
):
    logs = []
    run(tmp_path, params, batch, logs)
    entry = entry_of(tmp_path, params, batch)
    damage(entry)

    logs.clear()
    result = run(tmp_path, params, batch, logs)
    assert len(calls) == 2
    damaged, saved = cache_lines(logs)
    assert damaged.startswith(f"prefix train: cache file {entry.array} is damaged (")
    assert said in damaged and damaged.endswith("; computing it again")
    assert saved == f"prefix train: saved to {entry.array}"
    np.testing.assert_array_equal(result, fresh)

    logs.clear()
    np.testing.assert_array_equal(run(tmp_path, params, batch, logs), fresh)
    assert len(calls) == 2 and "reusing" in cache_lines(logs)[0]  # valid again on disk


def test_concurrent_writers_do_not_collide(params, batch, fresh, tmp_path, monkeypatch):
    entry = entry_of(tmp_path, params, batch)
    stale = tmp_path / f"{entry.array.name}.part"  # the fixed temporary name of old versions
    stale.write_bytes(b"left by a crashed run")
    both_computed = threading.Barrier(2, timeout=60)

    def computing_together(*args, **kwargs):
        out = compute_prefix(*args, **kwargs)
        both_computed.wait()  # both runs hold a finished temporary file before either commits
        return out

    monkeypatch.setattr(prefix_cache, "compute_prefix", computing_together)
    logs, results, errors = [], [None, None], []

    def one_run(i):
        try:
            results[i] = np.array(run(tmp_path, params, batch))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=one_run, args=(i,)) for i in range(2)]
    with collected(logs):  # one collector for both threads
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert errors == []
    assert cache_lines(logs).count(f"prefix train: saved to {entry.array}") == 2
    for result in results:
        np.testing.assert_array_equal(result, fresh)
    assert stale.read_bytes() == b"left by a crashed run"  # another run's file: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [entry.array.name, entry.record.name, stale.name]
    )
    monkeypatch.setattr(prefix_cache, "compute_prefix", lambda *a, **k: pytest.fail("recomputed"))
    logs.clear()
    np.testing.assert_array_equal(run(tmp_path, params, batch, logs), fresh)
    assert "reusing" in cache_lines(logs)[0]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")


@pytest.mark.parametrize(
    "target, failure, reason",
    [
        ("tempfile.mkstemp", read_only, "Read-only file system"),  # nothing could be created
        ("os.posix_fallocate", no_space, "No space left on device"),  # before computing
        ("os.fsync", no_space, "No space left on device"),  # writing the record, array complete
    ],
)
def test_unwritable_cache_folder_is_reported_and_skipped(
    params, batch, fresh, tmp_path, calls, monkeypatch, target, failure, reason
):
    module, name = target.split(".")
    monkeypatch.setattr({"os": os, "tempfile": prefix_cache.tempfile}[module], name, failure)
    folder = tmp_path / "cache"
    logs = []
    result = run(folder, params, batch, logs)
    monkeypatch.undo()

    assert cache_lines(logs) == [
        f"prefix train: cannot write the prefix cache in {folder} "
        f"({reason}); going on without the cache"
    ]
    np.testing.assert_array_equal(result, fresh)
    assert len(calls) == 1  # a complete temporary array is kept, not computed twice
    assert list(folder.iterdir()) == []  # no temporary files, no entry


def test_read_only_cache_folder(params, batch, fresh, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    folder.chmod(0o555)
    logs = []
    try:
        result = run(folder, params, batch, logs)
        np.testing.assert_array_equal(result, fresh)
        if os.geteuid() != 0:  # root writes anyway: then only "no crash" is checked here
            assert "cannot write the prefix cache" in cache_lines(logs)[0]
            assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_no_cache_dir_computes_in_memory(params, batch, fresh):
    np.testing.assert_array_equal(cached_prefix(None, CFG, params, *batch, STOP), fresh)


def test_interrupted_write_leaves_nothing_reusable(params, batch, fresh, tmp_path, monkeypatch):
    entry = entry_of(tmp_path, params, batch)
    real_replace = os.replace

    def crash_on_last_rename(src, dst):
        if str(dst) == str(entry.array):
            raise KeyboardInterrupt  # killed between the record's rename and the array's
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_last_rename)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, params, batch, [])
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [entry.record.name]  # no temporary files

    logs = []
    np.testing.assert_array_equal(run(tmp_path, params, batch, logs), fresh)
    assert cache_lines(logs) == [f"prefix train: saved to {entry.array}"]


def test_damaged_entry_is_removed_even_when_it_cannot_be_rewritten(
    params, batch, fresh, tmp_path, monkeypatch
):
    run(tmp_path, params, batch, [])
    entry = entry_of(tmp_path, params, batch)
    zero_data(entry)
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    logs = []
    np.testing.assert_array_equal(run(tmp_path, params, batch, logs), fresh)
    assert [line.split(" (")[0] for line in cache_lines(logs)] == [
        f"prefix train: cache file {entry.array} is damaged",
        f"prefix train: cannot write the prefix cache in {tmp_path}",
    ]
    assert list(tmp_path.iterdir()) == []  # its disk space is freed, not kept for the next run
