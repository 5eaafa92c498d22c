"""The SMS Spam Collection: fetch, check, read into the standard frame, and the lab's
numbers through the general data layer."""
import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from conftest import BPE_DIR, SMS_FILE, needs
from gpt2_jax import data, sms
from gpt2_jax.download import DownloadError
from gpt2_jax.tokenizer import get_tokenizer
from http_server import serve
from synthetic import write_sms_file


def _with_ids(df):
    return data.add_class_ids(df, data.class_names(df["label"]))


@needs(SMS_FILE)
def test_real_file_split_is_the_labs():
    df = _with_ids(data.read_table(SMS_FILE))  # auto: the file's name says "sms"
    assert len(df) == 5572 and list(df.columns) == ["text", "label", "where", "y"]
    assert df.attrs["classes"] == sms.SMS_LABELS == ("ham", "spam")
    assert df["label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}
    assert df.groupby("label")["y"].first().to_dict() == {"ham": 0, "spam": 1}
    splits = data.split(df, 2000, 500, 1000, seed=123)
    assert np.bincount(splits.train["y"]).tolist() == [1726, 274]
    assert (len(splits.val), len(splits.test)) == (500, 1000)
    shuffled = df.sample(frac=1, random_state=123)
    for (name, part), (a, b) in zip(splits.items(), [(0, 2000), (2000, 2500), (2500, 3500)]):
        assert part["text"].tolist() == shuffled["text"].iloc[a:b].tolist(), name
    assert len(data.split(df, 2000, 500, None).test) == 5572 - 2500
    assert len(data.epoch_order(2000, 16, 123, 1)) == 125


@needs(SMS_FILE)
def test_real_file_where_counts_lines_joined_by_a_quote():
    df = sms.read_sms_spam(SMS_FILE)
    # message 5082 opens a quote that pandas closes three lines further down
    assert df["where"].iloc[5080:5083].tolist() == [
        "SMSSpamCollection line 5081", "SMSSpamCollection line 5082",
        "SMSSpamCollection line 5085"]
    assert "\nham\tYeah, give me a call" in df["text"].iloc[5081]
    assert df["where"].iloc[-1] == "SMSSpamCollection line 5574"


@needs(SMS_FILE)
def test_real_file_balance_is_the_books():
    df = _with_ids(sms.read_sms_spam(SMS_FILE))
    ham, spam = df[df["label"] == "ham"], df[df["label"] == "spam"]
    book = pd.concat([ham.sample(len(spam), random_state=123), spam])
    balanced = data.balance_classes(df, 123)
    assert balanced["text"].iloc[:5].tolist() == book["text"].iloc[:5].tolist()
    assert balanced["text"].tolist() == book["text"].tolist()
    assert np.bincount(balanced["y"]).tolist() == [747, 747]


@needs(SMS_FILE)
@needs(BPE_DIR)
def test_real_file_pads_to_the_longest_training_message():
    splits = data.split(_with_ids(sms.read_sms_spam(SMS_FILE)), 2000, 500, 1000, seed=123)
    encoded, length = data.encode_splits(splits, get_tokenizer(BPE_DIR), 1024)
    assert length == 257
    assert encoded["train"].ids.shape == (2000, 257) and encoded["train"].truncated == 0
    assert encoded["train"].lengths.max() == 257
    assert encoded["train"].labels.tolist() == splits.train["y"].tolist()
    capped, length = data.encode_splits(splits, get_tokenizer(BPE_DIR), 1024, max_length=64)
    assert length == 64
    assert capped["train"].truncated == int((encoded["train"].lengths > 64).sum()) > 0


def test_split_sizes_and_balance(tmp_path):
    df = _with_ids(sms.read_sms_spam(write_sms_file(tmp_path / "s.txt", n_ham=90, n_spam=30)))
    with pytest.raises(ValueError, match="130 rows wanted, but the data has only 120"):
        data.split(df, 100, 20, 10)
    balanced = data.split(df, 40, 10, None, balance=True)
    together = np.concatenate([s["y"] for _, s in balanced.items()])
    assert np.bincount(together).tolist() == [30, 30]


@pytest.mark.parametrize("content, message", [
    (b"ham\thello\nspam\tWIN\nmaybe\twhat\n", r"line 3: label 'maybe'; expected one of"),
    (b"ham\thello\nspam WIN now\n", r"line 2: no tab; expected 'ham' or 'spam', a tab"),
    (b"ham\thello\nspam\t  \nham\tok\n", r"line 2: empty message after the 'spam' label"),
    (b"ham\thello\nspam\tWIN \xa3100\n", r"line 2, byte 10: 0xa3 is not UTF-8"),
    (b"ham\thello\nham\tbye\n", r"every message is labelled \['ham'\]; a classifier needs"),
    (b"ham\thello\nspam\t\"\"\n", r"s.txt line 2: empty message \(as pandas reads"),
])
def test_bad_rows_are_named_by_file_and_line(tmp_path, content, message):
    path = tmp_path / "s.txt"
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


def test_where_falls_back_to_message_numbers_if_the_parsers_disagree(tmp_path, monkeypatch):
    path = write_sms_file(tmp_path / "s.txt", n_ham=3, n_spam=2)
    assert sms.read_sms_spam(path)["where"].tolist()[:2] == ["s.txt line 1", "s.txt line 2"]
    monkeypatch.setattr(sms, "csv_records", lambda *a, **k: [])
    assert sms.read_sms_spam(path)["where"].tolist()[:2] == ["s.txt message 1",
                                                             "s.txt message 2"]


def test_training_split_without_a_class(tmp_path):
    df = _with_ids(sms.read_sms_spam(write_sms_file(tmp_path / "s.txt", n_ham=100, n_spam=2)))
    with pytest.raises(ValueError, match=r"the 3 training rows hold no row of class 'spam' "
                                         r"\(rows per class: \{'ham': 3, 'spam': 0\}\); use a "
                                         r"larger train size, or a stratified split"):
        data.split(df, 3, 10, 10, seed=1)


@needs(BPE_DIR)
def test_token_ids_beyond_the_models_vocabulary(tmp_path):
    df = _with_ids(sms.read_sms_spam(write_sms_file(tmp_path / "s.txt")))
    splits = data.split(df, 100, 20, 20)
    first = splits.train["where"].iloc[0]
    with pytest.raises(ValueError, match=rf"^{first} \(train split\) has token id \d+, but the "
                                         r"model's vocabulary has only 1000 ids"):
        data.encode_splits(splits, get_tokenizer(BPE_DIR), 64, vocab_size=1000)


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
