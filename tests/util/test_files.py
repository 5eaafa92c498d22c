"""util.files: whole files or none, modes like any new file, and the one file hash."""

import hashlib
import os
import stat

import pytest

from gpt2_jax.util.files import atomic_write, file_sha256, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_part(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def half_then_fail(part):
        part.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_write_replaces_whole_with_an_ordinary_mode(tmp_path):
    target = tmp_path / "config.json"
    write_text_atomic(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_file_sha256_reads_every_chunk(tmp_path):
    data = os.urandom(3 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path, chunk=1024) == hashlib.sha256(data).hexdigest()
