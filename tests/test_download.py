import shutil
import socket

import numpy as np
import pytest

from gpt2_jax.checkpoint import load_gpt2
from gpt2_jax.download import (GPT2_FILES, DownloadError, download_and_load_gpt2,
                               download_gpt2, fetch)
from http_server import serve


@pytest.fixture()
def remote(tmp_path, tiny_model_dir):
    """A server laid out like OpenAI's: <base>/<size>/<file>, for size "124M"."""
    root = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, root / "124M")
    for name in GPT2_FILES:  # a tiny model dir may lack the BPE files; the server has all 7
        if not (root / "124M" / name).exists():
            (root / "124M" / name).write_text(f"stand-in {name}\n")
    with serve(root) as (url, log):
        yield url, log, root / "124M"


def _gets(log):
    return sorted(path.rsplit("/", 1)[1] for cmd, path in log if cmd == "GET")


def test_fresh_download_then_skip(tmp_path, remote):
    url, log, src = remote
    settings, params = download_and_load_gpt2("124M", tmp_path / "models", base_url=url,
                                              progress=False)
    local = tmp_path / "models" / "124M"
    assert sorted(p.name for p in local.iterdir()) == sorted(GPT2_FILES)
    for name in GPT2_FILES:
        assert (local / name).read_bytes() == (src / name).read_bytes()
    assert _gets(log) == sorted(GPT2_FILES)
    _, expected = load_gpt2(src)
    np.testing.assert_array_equal(params["wte"], expected["wte"])

    log.clear()
    download_gpt2("124M", tmp_path / "models", base_url=url, progress=False)
    assert _gets(log) == []  # all complete: only HEAD requests


def test_truncated_file_is_fetched_again(tmp_path, remote):
    url, log, src = remote
    download_gpt2("124M", tmp_path / "models", base_url=url, progress=False)
    data = tmp_path / "models" / "124M" / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    log.clear()
    download_gpt2("124M", tmp_path / "models", base_url=url, progress=False)
    assert _gets(log) == ["model.ckpt.data-00000-of-00001"]
    assert data.read_bytes() == (src / data.name).read_bytes()
    assert not list(data.parent.glob("*.part"))


def _dead_url():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_offline_error_names_each_missing_file_and_url(tmp_path):
    dead = _dead_url()
    (tmp_path / "models" / "124M").mkdir(parents=True)
    (tmp_path / "models" / "124M" / "hparams.json").write_text("{}")
    with pytest.raises(DownloadError) as err:
        download_gpt2("124M", tmp_path / "models", base_url=dead, progress=False, timeout=2)
    message = str(err.value)
    assert "6 file(s) could not be downloaded" in message
    for name in GPT2_FILES:
        if name != "hparams.json":
            assert f"{dead}/124M/{name}" in message
            assert str(tmp_path / "models" / "124M" / name) in message
    assert "cannot reach the server" in message


def test_offline_keeps_complete_files(tmp_path, tiny_model_dir):
    models = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models / "124M")
    for name in GPT2_FILES:
        (models / "124M" / name).touch()
    # unreachable server and files present: use them without complaint
    download_gpt2("124M", models, base_url=_dead_url(), progress=False, timeout=2)
    # GPT2_JAX_OFFLINE: no network attempted at all
    assert fetch("http://example.invalid/x", models / "124M" / "vocab.bpe", offline=True)
    with pytest.raises(DownloadError, match="offline mode"):
        fetch("http://example.invalid/x", models / "nothing", offline=True)


def test_http_404_is_reported(tmp_path, remote):
    url, _, _ = remote
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{url}/124M/nope", tmp_path / "nope", progress=False)
    assert not (tmp_path / "nope").exists()


def test_unknown_size(tmp_path):
    with pytest.raises(ValueError, match="unknown GPT-2 model size '2B'"):
        download_gpt2("2B", tmp_path)
