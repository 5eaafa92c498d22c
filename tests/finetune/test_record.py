"""metrics.json has one schema: every writer's output reads back through ``RunRecord``, and
every reader (resume, the grid, the served page) reads it through the same type."""

import json

import pytest
from synthetic import write_sms_file

from gpt2_jax.commands.grid import result_of
from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig
from gpt2_jax.finetune.record import RECORD_VERSION, RunRecord, Selected
from gpt2_jax.finetune.run import resume_config, run
from gpt2_jax.training.config import TrainConfig

SIZES = dict(train_size=64, val_size=16, test_size=16)


def _json(value) -> str:
    """As JSON text, keys in order (so tuples equal lists and NaN equals NaN)."""
    return json.dumps(value, sort_keys=True, default=str)


def _config(model_dir, data_file, run_dir, epochs):
    return RunConfig(
        model=ModelConfig(model_dir=str(model_dir)),
        data=DataConfig(data_file=str(data_file), **SIZES),
        train=TrainConfig(epochs=epochs, lr=1e-3, batch_size=16),
        output=OutputConfig(run_dir=str(run_dir)),
    )


@pytest.mark.slow
def test_every_writer_reads_back_through_the_type(tiny_model_dir, tmp_path):
    data = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=72, n_spam=32)
    for epochs in (0, 1):  # a dry run and a finished run write different keys
        run_dir = tmp_path / f"run{epochs}"
        returned = run(_config(tiny_model_dir, data, run_dir, epochs), log=lambda s: None)
        text = (run_dir / "metrics.json").read_text()
        record = RunRecord.read(run_dir / "metrics.json")
        # the file is exactly the record: no key the type does not know, none lost
        assert _json(record.to_dict()) == _json(json.loads(text)) == _json(returned)
        assert record.record_version == RECORD_VERSION and record.config is not None
        assert RunConfig.from_dict(record.config) == _config(tiny_model_dir, data, run_dir, epochs)
        if epochs:
            assert record.status == "finished" and len(record.epochs) == 1
            assert record.selected == Selected(1, "last")
            figures = result_of(run_dir)  # the grid's reader
            assert figures is not None and _json(figures["metrics"]) == _json(returned)
            assert figures["test_acc"] == 100 * record.epochs[0]["test"]["accuracy"]
            making = record.compile_seconds  # a fresh process compiles the run's programs
            assert making is not None and making["programs"] > 0
            assert 0 < making["total"] < record.total_seconds
        else:
            assert record.status.startswith("checked") and record.seed is None
            assert result_of(run_dir) is None  # not a finished run: no row figures
            assert resume_config(run_dir).data == _config(tiny_model_dir, data, run_dir, 0).data


def test_partial_and_older_records_read(tmp_path):
    """A record without the version key (written before it existed) or without the keys
    of a finished run reads, with what is absent as None."""
    old = {"run_dir": "r", "config": {}, "epochs": [{"epoch": 1}], "status": "running"}
    record = RunRecord.from_dict(old)
    assert record.record_version == 1 and record.selected is None and record.seed is None
    assert record.to_dict() == {**old, "record_version": 1}


@pytest.mark.parametrize(
    "content, words",
    [
        ({"status": "finished", "epoch": []}, "unknown key(s) ['epoch']"),
        ({"epochs": 5}, "epochs is a JSON int"),
        ({"epochs": [3]}, "every entry of epochs"),
        ({"selected": {"epoch": "2", "by": "last"}}, "selected must be"),
        ({"total_seconds": True}, "total_seconds is True"),
        ({"record_version": RECORD_VERSION + 1}, "newer than this gpt2_jax reads"),
        ([1, 2], "a JSON list, not a run's record"),
    ],
)
def test_a_wrong_record_is_named_in_one_line(tmp_path, content, words):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError) as err:
        RunRecord.read(path)
    assert str(path) in str(err.value) and words in str(err.value)
    assert "\n" not in str(err.value)


def test_resume_names_a_damaged_record(tmp_path):
    (tmp_path / "metrics.json").write_text('{"status": "running", "config": "x"}')
    with pytest.raises(ValueError, match="config is a JSON str.*cannot resume from it"):
        resume_config(tmp_path)
