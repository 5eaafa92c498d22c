"""What a run says goes through ``logging`` to the terminal and, word for word, into the run
folder's ``run.log``."""

import dataclasses
import logging
import re

import numpy as np
import pytest
from synthetic import write_sms_file

from gpt2_jax.commands import spam
from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig
from gpt2_jax.finetune.run import run
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.util.logs import RUN_LOG, configure_terminal

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", re.M)


def _logged(run_dir) -> str:
    """run.log without its timestamps."""
    return STAMP.sub("", (run_dir / RUN_LOG).read_text())


@pytest.fixture(scope="module")
def sms_file(tmp_path_factory):
    return write_sms_file(tmp_path_factory.mktemp("data") / "SMSSpamCollection", 72, 32)


def _config(model_dir, data, run_dir, epochs=1):
    return RunConfig(
        model=ModelConfig(model_dir=str(model_dir)),
        data=DataConfig(data_file=str(data), train_size=64, val_size=16, test_size=16),
        train=TrainConfig(epochs=epochs, lr=1e-3),
        output=OutputConfig(run_dir=str(run_dir)),
    )


@pytest.mark.slow
def test_run_log_keeps_every_message(tiny_model_dir, sms_file, tmp_path):
    said = []
    run(_config(tiny_model_dir, sms_file, tmp_path / "r"), log=said.append)
    assert said and said[0].startswith("run folder:") and said[-1].startswith("done in")
    assert _logged(tmp_path / "r") == "".join(f"{m}\n" for m in said)


def test_the_command_shows_through_logging_what_run_log_keeps(
    tiny_model_dir, sms_file, tmp_path, capsys
):
    run_dir = tmp_path / "dry"
    args = ["--offline", "--data-file", str(sms_file), "--model-dir", str(tiny_model_dir)]
    sizes = ["--train-size", "64", "--val-size", "16", "--test-size", "16"]
    assert spam.main([*args, *sizes, "--epochs", "0", "--run-dir", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert "run folder:" in shown and "checked: --epochs 0" in shown
    assert _logged(run_dir) == shown
    # an application's own handler on the package logger sees the same messages
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("gpt2_jax").addHandler(handler)
    try:
        run(_config(tiny_model_dir, sms_file, tmp_path / "again", epochs=0))
    finally:
        logging.getLogger("gpt2_jax").removeHandler(handler)
    assert seen and seen[0].startswith("run folder:") and seen[-1].startswith("checked:")


def test_a_failed_run_says_why_in_its_log(tiny_model_dir, sms_file, tmp_path, monkeypatch):
    import gpt2_jax.finetune.run as finetune_run

    def broken(*args, **kwargs):
        raise OSError("disk unplugged")

    monkeypatch.setattr(finetune_run, "load_backbone", broken)
    with pytest.raises(OSError):
        run(_config(tiny_model_dir, sms_file, tmp_path / "f"), log=lambda s: None)
    assert _logged(tmp_path / "f").splitlines()[-1] == "error: disk unplugged"


def test_other_processes_show_warnings_only():
    logger = logging.getLogger("gpt2_jax.finetune.run")
    try:
        configure_terminal(main=False)
        assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
        configure_terminal(main=True)
        assert logger.isEnabledFor(logging.INFO)
    finally:
        configure_terminal(main=True)


def test_padding_that_multiplies_the_work_is_named(tiny_model_dir, sms_file, tmp_path):
    """The lab's pool pads every row to the longest text: the log says by how much and
    names the pool that does not; a pool that reads real tokens gets no such note."""
    said = {}
    for pool in ("last", "last-real"):
        lines = []
        cfg = _config(tiny_model_dir, sms_file, tmp_path / pool, epochs=0)
        cfg = dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, pool=pool),
            data=dataclasses.replace(cfg.data, max_length="context"),  # 64 wide
        )
        report = run(cfg, log=lines.append)
        said[pool] = lines
    width = report["data"]["max_length"]
    note = [m for m in said["last"] if "goes to padding" in m]
    assert len(note) == 1 and "--pool last-real" in note[0] and f"{width} wide" in note[0]
    assert not any("goes to padding" in m for m in said["last-real"])
    assert any(m.startswith(f"padded to at most {width} tokens") for m in said["last-real"])
    assert any(m.startswith(f"padded to {width} tokens") for m in said["last"])


def test_padding_warning_counts_real_tokens():
    from gpt2_jax.data.encoding import Encoded
    from gpt2_jax.finetune.inputs import padding_warning

    def split(lengths):
        lengths = np.asarray(lengths, np.int32)
        return Encoded(np.zeros((len(lengths), 64), np.int32), lengths, lengths * 0, 0)

    assert padding_warning({"train": split([64, 64, 10])}, 64, padded=True) is None  # 1.4x
    note = padding_warning({"train": split([8, 8]), "test": split([16])}, 64, padded=True)
    assert note is not None and "6.0x" in note and "average" in note
    assert padding_warning({"train": split([8, 8])}, 64, padded=False) is None
