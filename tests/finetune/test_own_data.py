"""Your own data end to end: a 3-class CSV through `experiments.finetune`, the saved
classifier used from a file and from Python, bad input, and `--config` reruns."""

import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from gpt2_jax import Classifier
from gpt2_jax.commands import finetune
from gpt2_jax.data.tables import read_table

pytestmark = pytest.mark.slow

CUES = {
    "billing": "my invoice for {n} dollars, is it right?",
    "bug": "the app crashes when I tap {n}\nthen it freezes",
    "praise": 'love it, "best" app {n}\tever',
}


def _write_csv(path, n_per_class, seed=0):
    rng = random.Random(seed)
    rows = [
        (team, text.format(n=rng.randint(1, 99)), rng.randint(1, 9))
        for team, text in CUES.items()
        for _ in range(n_per_class[team])
    ]
    rng.shuffle(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)  # quotes the fields holding commas, quotes, tabs and newlines
        w.writerow(["id", "body", "team", "priority"])
        for i, (team, body, priority) in enumerate(rows):
            w.writerow([i, body, team, priority])
    return path


@pytest.fixture(scope="module")
def tickets(tmp_path_factory):
    return _write_csv(
        tmp_path_factory.mktemp("data") / "tickets.csv", {"billing": 60, "bug": 40, "praise": 20}
    )


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tickets, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tickets"
    code = finetune.main(
        [
            "--data-file",
            str(tickets),
            "--text-column",
            "body",
            "--label-column",
            "team",
            "--model-dir",
            str(tiny_model_dir),
            "--epochs",
            "3",
            "--lr",
            "1e-3",
            "--pool",
            "last-real",
            "--run-dir",
            str(run_dir),
            "--memory-budget-gib",
            "0.001",
        ]
    )
    assert code == 0
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_three_classes_split_stratified_and_learned(trained):
    _, report = trained
    data = report["data"]
    assert data["classes"] == ["billing", "bug", "praise"]  # the stated rule: sorted names
    splits = data["splits"]
    # 120 rows: 96 / 12 / 12, each split with the file's 3 : 2 : 1 proportions
    assert [splits[s]["n"] for s in ("train", "val", "test")] == [96, 12, 12]
    assert [splits["train"][c] for c in ("billing", "bug", "praise")] == [48, 32, 16]
    assert [splits["test"][c] for c in ("billing", "bug", "praise")] == [6, 4, 2]
    np.testing.assert_allclose(report["class_weights"], [96 / 144, 96 / 96, 96 / 48], rtol=1e-6)
    last = report["epochs"][-1]
    assert last["train"]["accuracy"] > 0.5 and last["train"]["macro_f1"] > 0.4
    for split in ("train", "val", "test"):
        m = last[split]
        assert set(m["per_class"]) == {"billing", "bug", "praise"}
        assert np.array(m["confusion"]).shape == (3, 3)
        assert sum(c["support"] for c in m["per_class"].values()) == m["n"]


def test_prefix_kept_on_disk_when_over_the_memory_budget(trained):
    run_dir, report = trained
    assert report["prefix_storage"] == "disk"
    assert not (run_dir / "prefix").exists()  # removed when the run finished
    assert (run_dir / "recall.png").is_file() and (run_dir / "macro_f1.png").is_file()


def test_classify_a_file_and_the_python_api_agree(trained, tickets, tmp_path):
    run_dir, report = trained
    texts = read_table(tickets, text_column="body", label_column=None)["text"].tolist()[:20]
    out = tmp_path / "predictions.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.classify",
            "--run",
            str(run_dir),
            "--input",
            str(tickets),
            "--text-column",
            "body",
            "--output",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 120 and rows[0]["text"] == texts[0]
    clf = Classifier.load(run_dir)  # the README's notebook example
    pred = clf.predict(texts)
    assert clf.labels == ("billing", "bug", "praise")
    assert [r["label"] for r in rows[:20]] == pred.labels
    np.testing.assert_allclose(
        [[r[f"p_{c}"] for c in clf.labels] for r in rows[:20]], pred.probs, rtol=1e-5, atol=1e-6
    )


def test_config_reruns_a_saved_run(trained, tmp_path):
    run_dir, report = trained
    again = tmp_path / "again"
    assert finetune.main(["--config", str(run_dir), "--run-dir", str(again)]) == 0
    rerun = json.loads((again / "metrics.json").read_text())
    assert rerun["config"] == dict(
        report["config"], output=dict(report["config"]["output"], run_dir=str(again))
    )
    strip = lambda r: json.dumps(
        [
            {k: v for k, v in e.items() if "seconds" not in k}  # noqa
            for e in r["epochs"]
        ]
    )
    assert strip(rerun) == strip(report)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--text-column", "message"], "--text-column"),
        (["--labels", "billing,bug"], "praise"),
        (["--class-weights", "billing=1,bug=2"], "no weight for ['praise']"),
    ],
)
def test_bad_input_stops_before_the_weights_with_one_line(
    flags, message, tickets, tmp_path, capsys
):
    args = [
        "--data-file",
        str(tickets),
        "--text-column",
        "body",
        "--label-column",
        "team",
        "--model-dir",
        str(tmp_path / "no-model-here"),
        "--run-dir",
        str(tmp_path / "r"),
    ]
    assert finetune.main(args + flags) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "r").exists()  # nothing created before the data was checked


def test_finetune_needs_a_data_file(capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.main(["--epochs", "1"])
    assert exit_info.value.code == 2 and "--data-file is required" in capsys.readouterr().err


def test_finetune_reads_the_last_real_token_and_the_lab_the_last_position():
    from gpt2_jax.commands import spam
    from gpt2_jax.finetune.cli import parser

    assert finetune.DEFAULTS.model.pool == "last-real" and spam.LAB.model.pool == "last"
    for command, pool in ((finetune, "last-real"), (spam, "last")):
        defaults = finetune.DEFAULTS if command is finetune else spam.LAB
        p = parser("prog", "", "", defaults)
        assert p.parse_args([]).__dict__["model.pool"] == pool
        help_text = " ".join(p.format_help().split())
        assert f"saved with the classifier (default: {pool})" in help_text


@pytest.mark.slow
def test_a_default_finetune_run_says_its_pool_and_exports(
    tiny_model_dir, tickets, tmp_path, capsys
):
    from gpt2_jax.classifier.export import export_classifier

    run_dir = tmp_path / "run"
    args = ["--data-file", str(tickets), "--text-column", "body", "--label-column", "team"]
    args += ["--model-dir", str(tiny_model_dir), "--epochs", "1", "--run-dir", str(run_dir)]
    assert finetune.main(args) == 0
    assert "pool last-real: the head reads each text's last real token" in capsys.readouterr().out
    assert json.loads((run_dir / "classifier.json").read_text())["pool"] == "last-real"
    out = export_classifier(run_dir, tmp_path / "hf")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


@pytest.mark.slow
def test_truncate_tail_is_logged_and_saved_with_the_classifier(
    tiny_model_dir, tickets, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    args = ["--data-file", str(tickets), "--text-column", "body", "--label-column", "team"]
    args += ["--model-dir", str(tiny_model_dir), "--epochs", "1", "--run-dir", str(run_dir)]
    assert finetune.main(args + ["--max-length", "4", "--truncate", "tail"]) == 0
    out = capsys.readouterr().out
    assert "truncated to 4 tokens (each keeps the last 4 tokens; --truncate)" in out
    assert Classifier.load(run_dir).spec.truncate == "tail"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["truncate"] == "tail"
