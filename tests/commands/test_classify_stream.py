"""``classify --input`` streams: chunked predictions equal predicting all texts at once,
a killed run resumes to the same file, a partial output of another input is refused,
and memory does not grow with the file."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig, save_classifier
from gpt2_jax.commands import classify, classify_stream
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=2, num_classes=3
)
LABELS = ("billing", "bug", "praise")
WORDS = "the invoice app crashes, love it billed twice\tsettings card march thanks why ok".split(
    " "
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bpe_dir):
    spec = ClassifierConfig(model=CFG, labels=LABELS, pool="last-real", max_length=40)
    root = tmp_path_factory.mktemp("stream")
    return save_classifier(root / "run", init_params(CFG, seed=5), spec, bpe_dir=bpe_dir).parent


def texts(n: int, seed: int = 0, words: tuple[int, int] = (1, 60)) -> list[str]:
    """``n`` texts of ``words`` words, some with commas, quotes, tabs and line ends."""
    rng = random.Random(seed)
    out = [" ".join(rng.choices(WORDS, k=rng.randint(*words))) for _ in range(n)]
    for i in range(0, n, 7):
        out[i] = f'"{out[i]}"\nsecond line'
    return out


def write_input(path, items: list[str]) -> None:
    if path.suffix == ".csv":
        pd.DataFrame({"id": range(len(items)), "text": items}).to_csv(path, index=False)
    elif path.suffix == ".parquet":  # several row groups: read one at a time
        frame = pd.DataFrame({"id": range(len(items)), "text": items})
        frame.to_parquet(path, row_group_size=23)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in items)


def read_output(path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False)
    return pd.read_json(path, lines=True, dtype=False)


def cli(*args, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "experiments.classify", *map(str, args)]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )


@pytest.mark.parametrize(
    "suffixes", [(".csv", ".jsonl"), (".jsonl", ".csv"), (".parquet", ".jsonl")]
)
def test_streamed_predictions_equal_all_at_once(run_dir, tmp_path, capsys, suffixes):
    items = texts(300)
    source, out = tmp_path / f"in{suffixes[0]}", tmp_path / f"out{suffixes[1]}"
    write_input(source, items)
    argv = ["--run", str(run_dir), "--input", str(source), "--output", str(out)]
    assert classify.main([*argv, "--chunk-size", "37", "--batch-size", "8"]) == 0
    got = read_output(out)
    want = Classifier.load(run_dir).predict(items)
    assert got["text"].tolist() == items and got["label"].tolist() == want.labels
    probs = got[[f"p_{name}" for name in LABELS]].to_numpy()
    np.testing.assert_allclose(probs, want.probs, atol=1e-5)
    assert got["truncated"].tolist() == want.truncated.tolist()
    assert f"{int(want.truncated.sum())} of 300 texts were longer" in capsys.readouterr().err
    assert not any(p.name.endswith((".partial", ".partial.json")) for p in tmp_path.iterdir())


def test_streamed_stdout_equals_all_at_once(run_dir, tmp_path, capsys):
    items = texts(40, seed=1)
    write_input(tmp_path / "in.jsonl", items)
    argv = ["--run", str(run_dir), "--input", str(tmp_path / "in.jsonl"), "--chunk-size", "6"]
    assert classify.main(argv) == 0
    streamed = capsys.readouterr().out
    classify.print_table(items, Classifier.load(run_dir).predict(items), LABELS)
    assert streamed == capsys.readouterr().out


def wait_for_rows(record, process, rows: int, timeout: float = 120) -> None:
    """Poll the partial output's record until it counts at least ``rows`` rows."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            if json.loads(record.read_text())["rows"] >= rows:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{record} did not reach {rows} rows in {timeout} s")


def test_killed_run_resumes_to_the_same_output(run_dir, tmp_path, suffix=".csv"):
    items = texts(3000, seed=2)
    write_input(tmp_path / "in.csv", items)
    args = ["--run", run_dir, "--input", tmp_path / "in.csv", "--chunk-size", "50"]
    whole = cli(*args, "--output", tmp_path / f"whole{suffix}")
    assert whole.wait(timeout=300) == 0, whole.communicate()[1].decode()
    out = tmp_path / f"out{suffix}"
    first = cli(*args, "--output", out)
    wait_for_rows(tmp_path / f"out{suffix}.partial.json", first, 500)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    partial = tmp_path / f"out{suffix}.partial"
    done = json.loads((tmp_path / f"out{suffix}.partial.json").read_text())["rows"]
    assert 500 <= done < 3000 and not out.exists()
    with open(partial, "ab") as f:  # as if killed in the middle of a chunk
        f.write(b'half a row, "never finish')
    second = cli(*args, "--output", out)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err.decode()
    assert f"resuming {partial}: {done} of 3000 predictions are there" in err.decode()
    assert out.read_bytes() == (tmp_path / f"whole{suffix}").read_bytes()
    assert not partial.exists()
    assert read_output(out)["text"].tolist() == items


@pytest.mark.parametrize(
    "change, what",
    [
        ("content", "another input size, input content;"),
        ("column", "another --text-column"),
        ("dtype", "another --dtype (it was made with --dtype float32);"),
        ("record", "has no readable record"),
    ],
)
def test_partial_output_of_another_input_is_refused(run_dir, tmp_path, capsys, change, what):
    items = texts(60, seed=3)
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    with open(source, "w") as f:  # two columns of texts
        f.writelines(json.dumps({"text": t, "body": t[::-1]}) + "\n" for t in items)
    argv = ["--run", str(run_dir), "--input", str(source), "--output", str(out)]
    assert classify.main([*argv, "--chunk-size", "20"]) == 0
    complete = out.read_bytes()
    out.rename(tmp_path / "out.jsonl.partial")  # as if killed before the rename
    stamp = classify_stream.stamp(classify.parser().parse_args(argv))
    record = {"stamp": stamp, "rows": 60, "bytes": len(complete), "truncated": 0}
    (tmp_path / "out.jsonl.partial.json").write_text(json.dumps(record))
    if change == "content":
        with open(source, "a") as f:
            f.write(json.dumps({"text": "one more", "body": "one more"}) + "\n")
    elif change == "column":
        argv += ["--text-column", "body"]
    elif change == "dtype":
        argv += ["--dtype", "bfloat16"]
    else:
        (tmp_path / "out.jsonl.partial.json").write_text("{not json")
    capsys.readouterr()
    assert classify.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --output {out}: {out}.partial ") and what in err
    assert err.count("\n") == 1 and "to start over" in err
    assert (tmp_path / "out.jsonl.partial").read_bytes() == complete  # left as it was


def test_a_record_from_before_dtype_resumes_as_float32(run_dir, tmp_path, capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, texts(30, seed=4))
    argv = ["--run", str(run_dir), "--input", str(source), "--output", str(out)]
    assert classify.main(argv) == 0
    complete = out.read_bytes()
    out.rename(tmp_path / "out.jsonl.partial")  # killed before the rename, by an older version
    stamp = classify_stream.stamp(classify.parser().parse_args(argv))
    del stamp["dtype"]
    record = {"stamp": stamp, "rows": 30, "bytes": len(complete), "truncated": 0}
    (tmp_path / "out.jsonl.partial.json").write_text(json.dumps(record))
    assert classify.main([*argv, "--dtype", "bfloat16"]) == 1
    assert "another --dtype (it was made with --dtype float32);" in capsys.readouterr().err
    assert classify.main(argv) == 0
    assert out.read_bytes() == complete


def test_a_record_whose_partial_file_is_gone_says_so(run_dir, tmp_path, capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, texts(10, seed=5))
    argv = ["--run", str(run_dir), "--input", str(source), "--output", str(out)]
    stamp = classify_stream.stamp(classify.parser().parse_args(argv))
    record = {"stamp": stamp, "rows": 4, "bytes": 100, "truncated": 0}
    (tmp_path / "out.jsonl.partial.json").write_text(json.dumps(record))
    assert classify.main(argv) == 1
    err = capsys.readouterr().err
    assert f"{out}.partial is missing, though out.jsonl.partial.json says it holds 4 rows" in err
    assert err.count("\n") == 1 and not out.exists()


def test_bad_rows_stop_before_any_output(run_dir, tmp_path, capsys):
    lines = [json.dumps({"text": t}) for t in ["fine", "also fine", "<|endoftext|> hi"]]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["--run", str(run_dir), "--input", str(tmp_path / "in.jsonl")]
    assert classify.main([*argv, "--output", str(tmp_path / "out.csv")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: {tmp_path / 'in.jsonl'} line 3, column 'text' contains '<|endoftext|>', "
        "a special token the tokenizer does not accept inside a text\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def peak_rss_mib(*args) -> float:
    """Peak resident memory of the CLI run in a subprocess (Linux: ru_maxrss in KiB)."""
    code = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "assert done.returncode == 0, done.stderr.decode()\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    command = [sys.executable, "-c", code, sys.executable, "-m", "experiments.classify"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [*command, *map(str, args)], cwd=REPO, env=env, capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()
    return float(done.stdout)


@pytest.mark.slow
def test_memory_does_not_grow_with_the_file(run_dir, tmp_path):
    """100,000 rows of 150 words (~80 MiB of text) against 2,000 such rows: the peak
    grows by far less than the texts would take in memory (the million-row run is
    ``experiments/classify_stream_bench.py``)."""
    rng = random.Random(4)
    words = [w for w in WORDS if w.isalpha()]
    in_memory = {}  # MiB the texts take as Python strings
    for name, n in (("small", 2_000), ("large", 100_000)):
        rows = [" ".join(rng.choices(words, k=150)) for _ in range(n)]
        (tmp_path / f"{name}.csv").write_text("text\n" + "\n".join(rows) + "\n")
        in_memory[name] = sum(map(sys.getsizeof, rows)) / 2**20
        del rows
    peaks = {
        name: peak_rss_mib(
            "--run", run_dir, "--input", tmp_path / f"{name}.csv", "--output",
            tmp_path / f"{name}.jsonl", "--batch-size", "256", "--chunk-size", "1000",
        )
        for name in in_memory
    }  # fmt: skip
    assert in_memory["large"] > 70
    # reading the whole file would add at least the texts, and their output table and text
    assert peaks["large"] - peaks["small"] < in_memory["large"] / 2, (peaks, in_memory)
