"""The SMS Spam Collection: fetch, check, read into the standard frame, and the lab's
numbers through the general data layer."""

import io
import zipfile
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import BPE_DIR, SMS_FILE, needs
from http_server import serve
from synthetic import write_sms_file

from gpt2_jax.data import encoding, sms, splits, tables
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.util.fetch import DownloadError

# the reading, splitting and encoding that tables.py held before it was split in three
data = SimpleNamespace(**{**vars(tables), **vars(splits), **vars(encoding)})


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
        "SMSSpamCollection line 5081",
        "SMSSpamCollection line 5082",
        "SMSSpamCollection line 5085",
    ]
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


@pytest.mark.parametrize(
    "content, message",
    [
        (b"ham\thello\nspam\tWIN\nmaybe\twhat\n", r"line 3: label 'maybe'; expected one of"),
        (
            b"ham\thello\n" + b"x" * 100_000 + b"\tlate tab\n",
            r"line 2: label 'xxx\S*\.\.\. \(100,002 characters\); expected",
        ),
        (b"ham\thello\nspam WIN now\n", r"line 2: no tab; expected 'ham' or 'spam', a tab"),
        (b"ham\thello\nspam\t  \nham\tok\n", r"line 2: empty message after the 'spam' label"),
        (b"ham\thello\nspam\tWIN \xa3100\n", r"line 2, byte 10: 0xa3 is not UTF-8"),
        (b"ham\thello\nham\tbye\n", r"every message is labelled \['ham'\]; a classifier needs"),
        (b'ham\thello\nspam\t""\n', r"s.txt line 2: empty message \(as pandas reads"),
        (b"\xef\xbb\xbf\n  \n", r"s.txt: no messages; expected lines of 'ham' or 'spam', a tab"),
    ],
)
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
    assert sms.read_sms_spam(path)["where"].tolist()[:2] == ["s.txt message 1", "s.txt message 2"]


def test_training_split_without_a_class(tmp_path):
    df = _with_ids(sms.read_sms_spam(write_sms_file(tmp_path / "s.txt", n_ham=100, n_spam=2)))
    with pytest.raises(
        ValueError,
        match=r"the 3 training rows hold no row of class 'spam' "
        r"\(rows per class: \{'ham': 3, 'spam': 0\}\); use a "
        r"larger train size, or a stratified split",
    ):
        data.split(df, 3, 10, 10, seed=1)


def test_token_ids_beyond_the_models_vocabulary(tmp_path, bpe_dir):
    df = _with_ids(sms.read_sms_spam(write_sms_file(tmp_path / "s.txt")))
    splits = data.split(df, 100, 20, 20)
    first = splits.train["where"].iloc[0]
    with pytest.raises(
        ValueError,
        match=rf"^{first} \(train split\) has token id \d+, but the "
        r"model's vocabulary has only 100 ids",
    ):
        data.encode_splits(splits, get_tokenizer(bpe_dir), 64, vocab_size=100)


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


# ----------------------------------------------------------------- quoting and joins

# line 3 opens a quote that closes on line 7: pandas' quoting makes lines 3-7 one message
JOINED = (
    b"ham\tsee you at 6\n"  # line 1
    b"spam\tWIN a prize now\n"  # line 2
    b'ham\t"so he said\n'  # line 3: the quote opens
    b"ham\tok\n"  # line 4
    b"spam\tFREE entry\n"  # line 5
    b"ham\tlater\n"  # line 6
    b'spam\tclaim it" today\n'  # line 7: the quote closes
    b"ham\tbye\n"
)  # line 8


def test_a_quote_that_joins_lines_is_reported(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(JOINED)
    df = sms.read_sms_spam(path)  # the default: the lab's quoting
    assert df.attrs["quoting"] == "pandas"
    assert df.attrs["joined"] == [{"where": "s.txt line 3", "lines": 5}]
    assert df["where"].tolist() == ["s.txt line 1", "s.txt line 2", "s.txt line 3", "s.txt line 8"]
    assert df["text"].iloc[2] == (
        "so he said\nham\tok\nspam\tFREE entry\nham\tlater\nspam\tclaim it today"
    )
    assert df["label"].tolist() == ["ham", "spam", "ham", "ham"]


def test_quoting_none_reads_one_message_per_line(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(JOINED)
    df = sms.read_sms_spam(path, quoting="none")
    assert df.attrs == {"quoting": "none", "joined": []}
    assert df["where"].tolist() == [f"s.txt line {n}" for n in range(1, 9)]
    assert df["text"].iloc[2] == '"so he said' and df["text"].iloc[6] == 'claim it" today'
    assert df["label"].tolist() == ["ham", "spam", "ham", "ham", "spam", "ham", "spam", "ham"]


def test_read_table_passes_the_quoting_through(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(JOINED)
    assert sms.SMS_QUOTING == data.SMS_QUOTING == ("pandas", "none")
    assert len(data.read_table(path, fmt="sms")) == 4
    assert len(data.read_table(path, fmt="sms", sms_quoting="pandas")) == 4
    assert len(data.read_table(path, fmt="sms", sms_quoting="none")) == 8
    with pytest.raises(
        ValueError,
        match=r"unknown SMS quoting 'csv'; expected one of pandas, "
        r"none",
    ):
        data.read_table(path, fmt="sms", sms_quoting="csv")
    with pytest.raises(ValueError, match=r"SMS quoting 'csv' is not one of \('pandas', 'none'\)"):
        sms.read_sms_spam(path, quoting="csv")


def test_joins_are_counted_without_line_numbers_if_the_parsers_disagree(tmp_path, monkeypatch):
    path = tmp_path / "s.txt"
    path.write_bytes(JOINED)
    monkeypatch.setattr(sms, "csv_records", lambda *a, **k: [])
    df = sms.read_sms_spam(path)
    assert df.attrs["joined"] == [{"where": "s.txt message 3", "lines": 5}]


@needs(SMS_FILE)
def test_real_file_joins_are_reported_and_quoting_none_reads_every_line():
    df = sms.read_sms_spam(SMS_FILE)
    assert len(df) == 5572
    assert df.attrs["joined"] == [{"where": "SMSSpamCollection line 5082", "lines": 3}]
    plain = sms.read_sms_spam(SMS_FILE, quoting="none")
    assert len(plain) == 5574 and plain.attrs["joined"] == []
    assert plain["label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert plain["where"].iloc[-1] == "SMSSpamCollection line 5574"


@pytest.mark.parametrize(
    "content, quoting, message",
    [
        (
            b"ham\ta\tb\nspam\tx\n",
            "pandas",  # pandas would take the first column as an index
            r"s.txt line 1: 3 tab-separated fields, expected 2 \(label, message\); put a message "
            r"that holds a tab in quotes",
        ),
        (
            b"ham\tok\nspam\tx\nham\ta\tb\n",
            "pandas",  # pandas: "Expected 2 fields in line 3"
            r"s.txt line 3: 3 tab-separated fields, expected 2",
        ),
        (
            b'ham\tok\nspam\t"x\nham\tb\tc"\tq\n',
            "pandas",
            r"s.txt line 2: the quote at the start of this message joins lines 2-3 into one "
            r"record of 3 tab-separated fields",
        ),
        (
            b"ham\tok\nspam\tx\nham\ta\tb\n",
            "none",
            r"line 3: 3 tab-separated fields, expected 2 \(label, message\); remove the tab",
        ),
        (
            b'ham\tok\nspam\t"never closed\nham\tmore\n\nham\tq\n',
            "pandas",
            r"s.txt line 2: the quote that opens this message is never closed, so it would "
            r"swallow every line after it; remove the quote, or read the file with --quoting none",
        ),
    ],
)
def test_records_of_the_wrong_shape_are_named(tmp_path, content, quoting, message):
    path = tmp_path / "s.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        sms.read_sms_spam(path, quoting=quoting)
    assert str(path) in str(err.value)


def test_a_quoted_tab_is_part_of_the_message(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b'ham\tok\nspam\t"a\tb"\n')
    assert sms.read_sms_spam(path)["text"].tolist() == ["ok", "a\tb"]


@pytest.mark.parametrize("quoting", sms.SMS_QUOTING)
def test_byte_order_mark_and_blank_lines(tmp_path, quoting):
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xef\xbb\xbfham\thi\r\n\r\n   \nspam\tWIN\r\n")
    df = sms.read_sms_spam(path, quoting=quoting)
    assert df["label"].tolist() == ["ham", "spam"] and df["text"].tolist() == ["hi", "WIN"]
    assert df["where"].tolist() == ["s.txt line 1", "s.txt line 4"]
    assert df.attrs["joined"] == []


@needs(SMS_FILE)
def test_the_labs_second_run_tests_on_the_first_runs_messages():
    from gpt2_jax.finetune.config import DataConfig
    from gpt2_jax.finetune.inputs import read_data

    first = read_data(DataConfig(data_file=str(SMS_FILE)), 123).splits
    second = read_data(DataConfig(data_file=str(SMS_FILE), train_size=1000), 123).splits
    bigger = read_data(DataConfig(data_file=str(SMS_FILE), train_size=4000), 123).splits
    # the first run's cut is the lab's: rows 0-2000, 2000-2500, 2500-3500 of the shuffle
    plain = data.split(_with_ids(data.read_table(SMS_FILE)), 2000, 500, 1000, seed=123)
    for (name, part), (_, lab) in zip(first.items(), plain.items()):
        assert part["text"].tolist() == lab["text"].tolist(), name
    assert np.bincount(first.train["y"]).tolist() == [1726, 274]
    for other in (second, bigger):
        assert other.held_out_at == first.held_out_at == 2000
        assert other.val["where"].tolist() == first.val["where"].tolist()
        assert other.test["where"].tolist() == first.test["where"].tolist()
    assert second.train["where"].tolist() == first.train["where"].tolist()[:1000]
    assert len(bigger.train) == 4000 and not set(bigger.train["where"]) & set(first.test["where"])
