"""What a run says goes through ``logging`` to the terminal and, word for word, into the run
folder's ``run.log``."""

import logging
import re

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
