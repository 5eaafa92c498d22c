"""make_checkpoint's random weights are marked as such, every run on them says so, and an
existing folder (which may hold OpenAI's weights) is never written over by accident."""

import json

from synthetic import write_sms_file

from gpt2_jax.commands import make_checkpoint, spam
from gpt2_jax.weights.synthetic import random_weights_seed

SMALL = ["--n-embd", "32", "--n-layer", "1", "--n-head", "4", "--n-ctx", "64"]


def test_an_existing_folder_is_kept_unless_overwrite(tmp_path, bpe_dir, capsys):
    out = tmp_path / "models" / "random"
    args = ["--out", str(out), "--bpe-dir", str(bpe_dir), *SMALL]
    assert make_checkpoint.main([*args, "--seed", "3"]) == 0
    assert random_weights_seed(out) == 3
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert make_checkpoint.main([*args, "--seed", "4"]) == 1
    assert "is not an empty folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert make_checkpoint.main([*args, "--seed", "4", "--overwrite"]) == 0
    assert random_weights_seed(out) == 4


def test_a_run_on_random_weights_says_so(tmp_path, bpe_dir, capsys):
    model = tmp_path / "random"
    assert make_checkpoint.main(["--out", str(model), "--bpe-dir", str(bpe_dir), *SMALL]) == 0
    data = write_sms_file(tmp_path / "SMSSpamCollection")
    run_dir = tmp_path / "run"
    flags = ["--offline", "--model-dir", str(model), "--data-file", str(data), "--epochs", "0"]
    sizes = ["--train-size", "64", "--val-size", "16", "--test-size", "16"]
    assert spam.main([*flags, *sizes, "--run-dir", str(run_dir)]) == 0
    assert "holds random weights written by make_checkpoint (seed 0)" in capsys.readouterr().out
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["backbone"]["random_weights_seed"] == 0
