import shutil
import socket

import numpy as np
import pytest
from conftest import BPE_DIR, needs
from http_server import serve

from gpt2_jax.data.tokenizer import GPT2_BPE
from gpt2_jax.model.config import settings_for_size
from gpt2_jax.util.fetch import DownloadError, Expected, fetch, sha256_of
from gpt2_jax.weights.download import (
    GPT2_BASE_URL,
    GPT2_DATA_BYTES,
    GPT2_FILES,
    download_and_load_gpt2,
    download_gpt2,
    gpt2_files,
)
from gpt2_jax.weights.openai import load_gpt2, parameter_count


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
    return sorted(path.rsplit("/", 1)[1] for cmd, path, _ in log if cmd == "GET")


def test_fresh_download_then_skip(tmp_path, remote):
    url, log, src = remote
    settings, params = download_and_load_gpt2(
        "124M", tmp_path / "models", base_url=url, progress=False
    )
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


# ---- misbehaving servers: each case ends in a whole verified file or a clear error ----

FAST = dict(progress=False, backoff=0.01, timeout=5)


@pytest.fixture()
def blob(tmp_path):
    """A 300 kB file of random bytes on the server's disk, and its Expected."""
    root = tmp_path / "remote"
    root.mkdir()
    data = np.random.default_rng(0).bytes(300_000)
    (root / "f.bin").write_bytes(data)
    return root, data, Expected(len(data), sha256_of(root / "f.bin"))


def _no_leftovers(dest):
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_cut_connection_resumes_with_a_range_request(tmp_path, blob):
    root, data, expected = blob
    with serve(root, faults={"/f.bin": ["cut"]}) as (url, log):
        dest = fetch(f"{url}/f.bin", tmp_path / "f.bin", expected=expected, **FAST)
    assert dest.read_bytes() == data
    gets = [(path, rng) for cmd, path, rng in log if cmd == "GET"]
    assert gets == [("/f.bin", None), ("/f.bin", f"bytes={len(data) // 2}-")]


def test_cut_connection_without_range_support_starts_over(tmp_path, blob):
    root, data, _ = blob
    with serve(root, faults={"/f.bin": ["cut", "cut"]}, ranges=False) as (url, log):
        dest = fetch(f"{url}/f.bin", tmp_path / "f.bin", **FAST)  # nothing known: trust the server
    assert dest.read_bytes() == data
    assert len([c for c, _, _ in log if c == "GET"]) == 3


def test_server_error_then_success(tmp_path, blob):
    root, data, expected = blob
    with serve(root, faults={"/f.bin": ["500", "500"]}) as (url, log):
        dest = fetch(f"{url}/f.bin", tmp_path / "f.bin", expected=expected, **FAST)
    assert dest.read_bytes() == data
    assert len(log) == 3


def test_persistent_server_error_gives_up_with_the_reason(tmp_path, blob):
    root, _, expected = blob
    with serve(root, faults={"/f.bin": ["500"] * 10}) as (url, log):
        with pytest.raises(DownloadError, match=r"HTTP 500 .*gave up after 3 attempts"):
            fetch(f"{url}/f.bin", tmp_path / "f.bin", expected=expected, retries=2, **FAST)
    _no_leftovers(tmp_path / "f.bin")


def test_not_found_moves_to_the_mirror(tmp_path, blob):
    root, data, expected = blob
    with serve(root) as (url, log):
        urls = (f"{url}/gone.bin", f"{url}/f.bin")
        dest = fetch(urls, tmp_path / "f.bin", expected=expected, **FAST)
        assert dest.read_bytes() == data
        assert [p for _, p, _ in log] == ["/gone.bin", "/f.bin"]  # a 404 is not retried
        with pytest.raises(DownloadError) as err:
            fetch((f"{url}/gone.bin", f"{url}/also-gone.bin"), tmp_path / "g.bin", **FAST)
    message = str(err.value)
    assert message.startswith("1 file(s)") and "g.bin: server answered HTTP 404" in message
    assert f"get it from {url}/gone.bin\n" in message and f" or {url}/also-gone.bin\n" in message
    _no_leftovers(tmp_path / "g.bin")


def test_slow_server_times_out_then_retries(tmp_path, blob):
    root, data, expected = blob
    options = dict(FAST, timeout=0.5)
    with serve(root, faults={"/f.bin": ["slow"]}, slow_s=1.5) as (url, log):
        dest = fetch(f"{url}/f.bin", tmp_path / "f.bin", expected=expected, **options)
        assert dest.read_bytes() == data
    with serve(root, faults={"/f.bin": ["slow"] * 5}, slow_s=1.5) as (url, log):
        with pytest.raises(DownloadError, match="timeout"):
            fetch(f"{url}/f.bin", tmp_path / "g.bin", expected=expected, retries=1, **options)
    _no_leftovers(tmp_path / "g.bin")


def test_wrong_length_is_never_kept(tmp_path, blob):
    root, _, expected = blob
    with serve(root, faults={"/f.bin": ["short-length"]}) as (url, _):
        with pytest.raises(DownloadError, match="299,900 bytes; the known file has 300,000"):
            fetch(f"{url}/f.bin", tmp_path / "f.bin", expected=expected, **FAST)
    _no_leftovers(tmp_path / "f.bin")


def test_wrong_hash_is_never_kept(tmp_path, blob):
    root, _, expected = blob
    wrong = Expected(expected.size, "0" * 64)
    with serve(root) as (url, _):
        with pytest.raises(DownloadError, match="damaged: SHA-256"):
            fetch(f"{url}/f.bin", tmp_path / "f.bin", expected=wrong, **FAST)
    _no_leftovers(tmp_path / "f.bin")


def test_damaged_file_on_disk_is_replaced_online_and_refused_offline(tmp_path, blob):
    root, data, expected = blob
    dest = tmp_path / "f.bin"
    dest.write_bytes(data[:-1] + b"x")  # right size, wrong bytes
    with pytest.raises(DownloadError, match="on disk but damaged"):
        fetch("http://example.invalid/f.bin", dest, expected=expected, offline=True)
    with serve(root) as (url, log):
        fetch(f"{url}/f.bin", dest, expected=expected, **FAST)
        assert dest.read_bytes() == data
        log.clear()
        fetch(f"{url}/f.bin", dest, expected=expected, **FAST)
        assert log == []  # known size and hash: verified locally, no request at all


def test_known_sizes_are_the_models_parameter_counts():
    for size, nbytes in GPT2_DATA_BYTES.items():
        assert nbytes == 4 * parameter_count(settings_for_size(size)), size
    official = {dest.name: exp for _, dest, exp in gpt2_files("355M", "m")}
    assert official["model.ckpt.data-00000-of-00001"].size == 1_419_292_672
    assert official["vocab.bpe"] == GPT2_BPE["vocab.bpe"]
    assert all(e == Expected() for _, _, e in gpt2_files("355M", "m", base_url="http://x"))
    urls = {dest.name: u for u, dest, _ in gpt2_files("355M", "m")}
    assert urls["checkpoint"] == (f"{GPT2_BASE_URL}/355M/checkpoint",)
    assert urls["vocab.bpe"][1].endswith("/gpt-2/encodings/main/vocab.bpe")


@needs(BPE_DIR)
def test_known_bpe_hashes_match_the_real_files():
    for name, expected in GPT2_BPE.items():
        path = BPE_DIR / name
        assert (path.stat().st_size, sha256_of(path)) == (expected.size, expected.sha256)


def test_offline_message_for_openais_files_lists_each_file_once(tmp_path):
    with pytest.raises(DownloadError) as err:
        download_gpt2("124M", tmp_path, offline=True)
    message = str(err.value)
    assert message.startswith("7 file(s) could not be downloaded")
    assert f"get it from {GPT2_BASE_URL}/124M/vocab.bpe\n" in message
    assert (
        " or https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe" in message
    )
