"""A first run without its inputs lists them all in one error: the data and GPT-2's
files, each with the flag that points at a copy, and the way round OpenAI's weights."""

from __future__ import annotations

import re
import shlex
import zipfile

import pytest
from conftest import SMS_FILE, needs
from synthetic import write_sms_file

from gpt2_jax.commands import make_checkpoint, spam
from gpt2_jax.finetune.config import DataConfig, ModelConfig
from gpt2_jax.finetune.inputs import read_data
from gpt2_jax.finetune.missing import MissingInputs, data_first
from gpt2_jax.weights.download import GPT2_FILES
from gpt2_jax.weights.pretrained import read_folder_settings


def _first_run(tmp_path, *extra):
    return [
        "--data-dir",
        str(tmp_path / "data"),
        "--models-dir",
        str(tmp_path / "models"),
        "--run-dir",
        str(tmp_path / "run"),
        *extra,
    ]


def test_offline_first_run_lists_data_and_model_in_one_error(tmp_path, capsys):
    assert spam.main(_first_run(tmp_path, "--offline")) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "offline mode: nothing was downloaded" in err
    assert "sms_spam_collection.zip" in err and "--data-file FILE" in err
    assert "unzipped" in err and "SMSSpamCollection" in err
    assert all(f"  {name}: " in err for name in GPT2_FILES)
    assert "--model-dir DIR" in err and "Hugging Face" in err
    assert "python -m experiments.make_checkpoint --size 124M" in err
    assert not (tmp_path / "run").exists()  # nothing claimed, nothing fetched
    assert not any((tmp_path / "models").rglob("*.*"))


def test_failed_online_run_looks_for_the_weights_on_disk_only(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_JAX_OFFLINE", raising=False)
    m = ModelConfig(models_dir=str(tmp_path / "models"))
    read = lambda: read_data(DataConfig(data_dir=str(tmp_path / "data")), 123)  # noqa: E731
    with pytest.raises(MissingInputs) as caught:
        data_first(read, m)  # conftest: no host name resolves, as without a network
    err = caught.value
    assert {f.dest.name for f in err.model} == set(GPT2_FILES)
    assert all("not downloaded, since the data is missing" in f.reason for f in err.model)
    assert "offline mode" not in str(err).splitlines()[0]
    assert not (tmp_path / "models").exists()


def test_the_weights_alone_missing_say_how_to_do_without(tmp_path, capsys):
    data = write_sms_file(tmp_path / "SMSSpamCollection")
    sizes = ["--train-size", "64", "--val-size", "16", "--test-size", "16"]
    assert spam.main(_first_run(tmp_path, "--offline", "--data-file", str(data), *sizes)) == 1
    err = capsys.readouterr().err
    assert "the run lacks GPT-2 124M" in err and "the data:" not in err
    assert "--model-dir DIR" in err and "make_checkpoint" in err


def test_the_make_checkpoint_hint_is_a_command_that_works(tmp_path, bpe_dir):
    text = str(MissingInputs([], [], ModelConfig(models_dir=str(tmp_path / "models"))))
    hint = str(MissingInputs([], _seven(tmp_path), ModelConfig(models_dir=str(tmp_path))))
    assert "make_checkpoint" not in text
    command = re.search(r"python -m experiments\.make_checkpoint ([^(]*)\(", hint).group(1)
    args = [str(bpe_dir) if a == "DIR" else a for a in shlex.split(command)]
    small = ["--n-embd", "32", "--n-layer", "1", "--n-head", "4", "--n-ctx", "64"]
    make_checkpoint.main(args + small)
    out = args[args.index("--out") + 1]
    assert f"then give --model-dir {out}" in hint
    assert read_folder_settings(out)["n_layer"] == 1


def _seven(tmp_path):
    from gpt2_jax.util.fetch import MissingFile

    return [MissingFile("http://x.invalid/" + n, tmp_path / n, "absent") for n in GPT2_FILES]


@needs(SMS_FILE)
def test_data_file_takes_the_zip_as_downloaded(tmp_path):
    zipped = tmp_path / "sms.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(SMS_FILE, "SMSSpamCollection")
    cfg = DataConfig(data_file=str(zipped), data_dir=str(tmp_path / "data"))
    from_zip = read_data(cfg, 123)
    plain = read_data(DataConfig(data_file=str(SMS_FILE)), 123)
    assert from_zip.rows == plain.rows == 5572
    assert from_zip.splits.test["text"].tolist() == plain.splits.test["text"].tolist()


def test_a_zip_that_is_not_the_collection_is_kept_and_named(tmp_path):
    zipped = tmp_path / "other.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(write_sms_file(tmp_path / "SMSSpamCollection"), "SMSSpamCollection")
    cfg = DataConfig(data_file=str(zipped), data_dir=str(tmp_path / "data"))
    with pytest.raises(ValueError, match=r"other\.zip: its SMSSpamCollection has SHA-256"):
        read_data(cfg, 123)
    assert zipped.is_file()
