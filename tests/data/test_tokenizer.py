import hashlib
import shutil
import socket

import pytest
from conftest import BPE_DIR, REAL_BPE, needs_real_bpe

from gpt2_jax.data import tokenizer
from gpt2_jax.data.tokenizer import END_OF_TEXT_ID, TIKTOKEN_GPT2_URL, get_tokenizer


@needs_real_bpe
def test_local_bpe_files_give_gpt2_ids():
    tok = get_tokenizer(BPE_DIR)
    assert tok.n_vocab == 50257
    assert tok.encode("<|endoftext|>", allowed_special="all") == [END_OF_TEXT_ID] == [50256]
    assert tok.encode("Hello, world") == [15496, 11, 995]
    assert tok.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    text = "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005!!  \u00a3100 ok?"
    assert tok.decode(tok.encode(text)) == text


def test_missing_files_and_no_network_explain(tmp_path, monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("no route to host")

    monkeypatch.delenv("GPT2_JAX_OFFLINE", raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(
        RuntimeError,
        match=f"no encoder.json \\+ vocab.bpe in {tmp_path} "
        "\\(nor vocab.json \\+ merges.txt or tokenizer.json\\), and "
        "tiktoken could not download them \\(no route",
    ):
        get_tokenizer(tmp_path)


# ----------------------------------------------------------------- offline: no network at all


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every way out is refused and recorded; tiktoken's cache is an empty folder."""
    tried = []

    def refuse(*args, **kwargs):
        tried.append(args)
        raise OSError("network used in a test that must not use it")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tokenizer.tiktoken, "get_encoding", refuse)
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.delenv("GPT2_JAX_OFFLINE", raising=False)
    return tried, cache


def _offline_message(folder):
    return (
        f"GPT-2 tokenizer unavailable: no encoder.json + vocab.bpe in {folder} (nor "
        f"vocab.json + merges.txt or tokenizer.json), nor in "
        f"tiktoken's cache ({{cache}}), and offline mode downloads nothing; get "
        f"them from {TIKTOKEN_GPT2_URL}/encoder.json and {TIKTOKEN_GPT2_URL}/vocab.bpe "
        f"and put both in {folder}"
    )


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_without_files_names_the_folder_and_touches_no_network(
    no_network, tmp_path, monkeypatch, how
):
    tried, cache = no_network
    folder = tmp_path / "model"
    folder.mkdir()
    if how == "environment":
        monkeypatch.setenv("GPT2_JAX_OFFLINE", "1")
    with pytest.raises(RuntimeError) as err:
        get_tokenizer(folder, offline=True if how == "argument" else None)
    assert str(err.value) == _offline_message(folder).format(cache=cache)
    assert tried == []


def test_offline_with_caching_disabled(no_network, monkeypatch):
    tried, _ = no_network
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    with pytest.raises(
        RuntimeError,
        match=r"no encoder.json \+ vocab.bpe \(no model folder "
        r"given\) \(nor vocab.json \+ merges.txt or "
        r"tokenizer.json\), nor in tiktoken's cache \(disabled\), "
        r"and offline mode downloads nothing; get them from",
    ):
        get_tokenizer(offline=True)
    assert tried == []


def _fill_cache(cache, **changes):
    """Copy the BPE files into ``cache`` under the names tiktoken gives them."""
    for name in ("encoder.json", "vocab.bpe"):
        key = hashlib.sha1(f"{TIKTOKEN_GPT2_URL}/{name}".encode()).hexdigest()
        shutil.copyfile(BPE_DIR / name, cache / key)
        if name in changes:
            (cache / key).write_bytes(changes[name])


@needs_real_bpe  # tiktoken's cache is checked against the real files' SHA-256
def test_offline_reads_tiktokens_cache(no_network, tmp_path):
    tried, cache = no_network
    _fill_cache(cache)
    tok = get_tokenizer(tmp_path / "nowhere", offline=True)
    assert tok.encode("Hello, world") == [15496, 11, 995] and tok.n_vocab == 50257
    assert tried == []


@needs_real_bpe
def test_offline_ignores_a_damaged_cache(no_network, tmp_path):
    tried, cache = no_network
    _fill_cache(cache, **{"vocab.bpe": b"#version: 0.2\n"})
    with pytest.raises(RuntimeError, match="nor in tiktoken's cache"):
        get_tokenizer(tmp_path, offline=True)
    assert tried == []


def test_offline_with_local_files(no_network, bpe_dir):
    from tiny_bpe import reference_encode

    tried, _ = no_network
    want = [15496, 11, 995] if REAL_BPE else reference_encode("Hello, world", bpe_dir)
    assert get_tokenizer(bpe_dir, offline=True).encode("Hello, world") == want
    assert tried == []


@pytest.mark.parametrize(
    "name, content",
    [
        ("vocab.bpe", b"#version: 0.2\nG t\n"),  # merges that do not fit the encoder
        ("encoder.json", b'{"!": 0, '),  # not JSON
    ],
)
def test_damaged_local_files_are_named(tmp_path, name, content, bpe_dir):
    for other in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(bpe_dir / other, tmp_path / other)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(
        RuntimeError,
        match=r"encoder.json \+ .*vocab.bpe: not GPT-2's "
        r"byte-pair files \(.*\); replace both",
    ) as err:
        get_tokenizer(tmp_path, offline=True)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------- which files a fallback used, and from where


def _told(folder, **kwargs) -> list[str]:
    from training_helpers import collected

    lines: list[str] = []
    with collected(lines):
        get_tokenizer(folder, **kwargs)
    return [line for line in lines if line.startswith("tokenizer:")]


def test_the_model_folders_own_files_need_no_word(no_network, bpe_dir):
    assert _told(bpe_dir, offline=True) == []


def test_hugging_face_names_are_said(no_network, bpe_dir, tmp_path):
    shutil.copyfile(bpe_dir / "encoder.json", tmp_path / "vocab.json")
    shutil.copyfile(bpe_dir / "vocab.bpe", tmp_path / "merges.txt")
    assert _told(tmp_path, offline=True) == [
        f"tokenizer: vocab.json + merges.txt from {tmp_path} (no encoder.json + vocab.bpe there)"
    ]


@needs_real_bpe  # tiktoken's cache is checked against the real files' SHA-256
def test_tiktokens_cache_is_said_with_its_folder(no_network, tmp_path):
    tried, cache = no_network
    _fill_cache(cache)
    empty = tmp_path / "model"
    empty.mkdir()
    assert _told(empty, offline=True) == [
        f"tokenizer: encoder.json + vocab.bpe from tiktoken's cache ({cache}) (none in {empty})"
    ]
    assert _told(None, offline=True)[0].endswith("(no model folder given)")
    assert tried == []
