import io
import zipfile

import numpy as np
import pytest

from conftest import BPE_DIR, SMS_FILE, needs
from gpt2_jax import data as sms
from gpt2_jax.download import DownloadError
from gpt2_jax.tokenizer import get_tokenizer
from http_server import serve
from synthetic import write_sms_file


@needs(SMS_FILE)
def test_real_file_split_is_the_labs():
    df = sms.read_sms_spam(SMS_FILE)
    assert len(df) == 5572
    assert df["label"].value_counts().to_dict() == {0: 4825, 1: 747}
    splits = sms.split(df, 2000, 500, 1000, seed=123)
    assert np.bincount(splits.train["label"]).tolist() == [1726, 274]
    assert (len(splits.val), len(splits.test)) == (500, 1000)
    shuffled = df.sample(frac=1, random_state=123)
    assert splits.train["Text"].tolist() == shuffled["Text"].iloc[:2000].tolist()
    assert len(sms.split(df, 2000, 500, None).test) == 5572 - 2500
    assert len(sms.epoch_order(2000, 16, 123, 1)) == 125


@needs(SMS_FILE)
@needs(BPE_DIR)
def test_real_file_pads_to_the_longest_training_message():
    splits = sms.split(sms.read_sms_spam(SMS_FILE), 2000, 500, 1000, seed=123)
    encoded, length = sms.encode_splits(splits, get_tokenizer(BPE_DIR), 1024)
    assert length == 257
    assert encoded["train"].ids.shape == (2000, 257) and encoded["train"].truncated == 0
    assert encoded["train"].lengths.max() == 257
    capped, length = sms.encode_splits(splits, get_tokenizer(BPE_DIR), 1024, max_length=64)
    assert length == 64
    assert capped["train"].truncated == int((encoded["train"].lengths > 64).sum()) > 0


def test_encode_pads_with_end_of_text_and_truncates():
    enc = sms.encode([[1, 2], [3, 4, 5, 6, 7], []], [0, 1, 0], max_length=4)
    assert enc.ids.tolist() == [[1, 2, 50256, 50256], [3, 4, 5, 6], [50256] * 4]
    assert enc.lengths.tolist() == [2, 4, 0] and enc.truncated == 1


def test_epoch_order_is_seeded_drops_last_and_reshuffles():
    a = sms.epoch_order(50, 16, seed=7, epoch=1)
    assert len(a) == 3 and all(len(b) == 16 for b in a)
    assert [b.tolist() for b in a] == [b.tolist() for b in sms.epoch_order(50, 16, 7, 1)]
    assert [b.tolist() for b in a] != [b.tolist() for b in sms.epoch_order(50, 16, 7, 2)]
    assert len(set(np.concatenate(a).tolist())) == 48
    assert sum(map(len, sms.epoch_order(50, 16, 7, 1, drop_last=False))) == 50


def test_split_sizes_and_balance(tmp_path):
    df = sms.read_sms_spam(write_sms_file(tmp_path / "s.txt", n_ham=90, n_spam=30))
    with pytest.raises(ValueError, match="130 rows wanted, but the data has only 120"):
        sms.split(df, 100, 20, 10)
    balanced = sms.split(df, 40, 10, None, balance=True)
    together = np.concatenate([s["label"] for _, s in balanced.items()])
    assert np.bincount(together).tolist() == [30, 30]


@pytest.mark.parametrize("content, message", [
    (b"ham\thello\nspam\tWIN\nmaybe\twhat\n", r"line 3: label 'maybe'; expected one of"),
    (b"ham\thello\nspam WIN now\n", r"line 2: no tab; expected 'ham' or 'spam', a tab"),
    (b"ham\thello\nspam\t  \nham\tok\n", r"line 2: empty message after the 'spam' label"),
    (b"ham\thello\nspam\tWIN \xa3100\n", r"line 2, byte 10: 0xa3 is not UTF-8"),
    (b"ham\thello\nham\tbye\n", r"every message is labelled \['ham'\]; a classifier needs"),
])
def test_bad_rows_are_named_by_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        sms.read_sms_spam(path)
    assert str(path) in str(err.value)


def test_several_problems_are_listed_together(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ham\tok\nx\ty\nno tab\nspam\t\n" * 3)
    message = str(pytest.raises(ValueError, sms.read_sms_spam, path).value)
    assert message.count("\n  line ") == 5 and "stopped after the first ones" in message
    assert "line 2:" in message and "line 3:" in message and "line 4:" in message


def test_training_split_without_a_class(tmp_path):
    df = sms.read_sms_spam(write_sms_file(tmp_path / "s.txt", n_ham=100, n_spam=2))
    with pytest.raises(ValueError, match="training messages hold no 'spam' message"):
        sms.split(df, 3, 10, 10, seed=1)


@needs(BPE_DIR)
def test_token_ids_beyond_the_models_vocabulary(tmp_path):
    df = sms.read_sms_spam(write_sms_file(tmp_path / "s.txt"))
    splits = sms.split(df, 100, 20, 20)
    with pytest.raises(ValueError, match=r"train message 1 has token id \d+, but the model's "
                                         r"vocabulary has only 1000 ids"):
        sms.encode_splits(splits, get_tokenizer(BPE_DIR), 64, vocab_size=1000)


def _zip_bytes(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SMSSpamCollection", payload)
        z.writestr("readme", "test")
    return buf.getvalue()


def test_fetch_unzips_and_falls_back_to_the_mirror(tmp_path):
    payload = b"ham\thi there\nspam\tWIN now\n"
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "mirror.zip").write_bytes(_zip_bytes(payload))
    with serve(remote) as (url, log):
        urls = (f"{url}/missing.zip", f"{url}/mirror.zip")
        path = sms.fetch_sms_spam(tmp_path / "cache", urls=urls, sha256=None, progress=False)
        assert path.read_bytes() == payload
        log.clear()
        assert sms.fetch_sms_spam(tmp_path / "cache", urls=urls) == path
        assert log == []  # cached: no request at all
        with pytest.raises(DownloadError, match="missing.zip"):
            sms.fetch_sms_spam(tmp_path / "other", urls=(f"{url}/missing.zip",))


@needs(SMS_FILE)
def test_fetch_checks_the_unzipped_files_hash(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    real = SMS_FILE.read_bytes()
    (remote / "real.zip").write_bytes(_zip_bytes(real))
    (remote / "edited.zip").write_bytes(_zip_bytes(real.replace(b"ham\t", b"spam\t", 1)))
    with serve(remote) as (url, _):
        path = sms.fetch_sms_spam(tmp_path / "a", urls=(f"{url}/real.zip",), progress=False)
        assert path.read_bytes() == real
        with pytest.raises(ValueError, match="SHA-256 .* expected 7d039a24"):
            sms.fetch_sms_spam(tmp_path / "b", urls=(f"{url}/edited.zip",), progress=False)
    folder = tmp_path / "b" / "sms_spam_collection"
    assert list(folder.iterdir()) == []  # neither the zip nor a file a later run would trust


def test_messages_longer_than_the_context_are_truncated_and_counted(tmp_path):
    df = sms.read_sms_spam(write_sms_file(tmp_path / "s.txt"))
    splits = sms.split(df, 100, 20, 20)
    tokenizer = _WordTokenizer()
    encoded, length = sms.encode_splits(splits, tokenizer, context_length=4)
    longest = max(len(t.split()) for t in splits.train["Text"])
    assert length == 4 < longest
    assert encoded["train"].truncated == sum(len(t.split()) > 4 for t in splits.train["Text"]) > 0
    assert encoded["train"].lengths.max() == 4


class _WordTokenizer:
    """One id per word: enough to count tokens without the BPE files."""

    def encode(self, text):
        return [len(word) for word in text.split()]
