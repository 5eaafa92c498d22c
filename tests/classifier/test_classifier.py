"""A saved classifier knows what it is: save, load, predict, the CLI, damaged folders,
and predictions compiled once per shape with the weights as arguments."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO

import gpt2_jax.classifier.classifier as clf
from gpt2_jax.classifier.classifier import (
    Classifier,
    ClassifierConfig,
    load_classifier,
    predict_proba,
    save_classifier,
)
from gpt2_jax.commands import classify
from gpt2_jax.data.encoding import PAD_ID
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, init_params

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=2, num_classes=3
)
LABELS = ("billing", "bug", "praise")
MAX_LENGTH = 40
LONG = " ".join(["the invoice for march was charged twice to my card"] * 8)  # > 40 tokens
TEXTS = [
    "thanks, love it",
    "the app crashes when I open settings",
    LONG,
    "why was I billed twice?",
    "ok",
]


def spec(pool="last-real", **changes):
    return ClassifierConfig(
        **{"model": CFG, "labels": LABELS, "pool": pool, "max_length": MAX_LENGTH, **changes}
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bpe_dir):
    """``{pool: run folder}``: the same random weights saved with each pooling."""
    params = init_params(CFG, seed=3)
    root = tmp_path_factory.mktemp("classifiers")
    return {
        pool: save_classifier(root / pool, params, spec(pool), bpe_dir=bpe_dir).parent
        for pool in ("last", "last-real")
    }


def run_cli(*args, stdin=None):
    """The CLI in a subprocess; ``stdin`` as str, or as bytes sent unchanged (stdout and
    stderr are decoded as UTF-8 either way)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "experiments.classify", *map(str, args)],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    out.stdout, out.stderr = out.stdout.decode(), out.stderr.decode()
    return out


def reference_probs(params, tokenizer, text, pool):
    """The plain computation: full forward of one text, read at the pooled position."""
    toks = tokenizer.encode(text)[:MAX_LENGTH]
    if pool == "last":  # the last position of the text padded to max_length
        ids, at = toks + [PAD_ID] * (MAX_LENGTH - len(toks)), MAX_LENGTH - 1
    else:  # the last real token: padding plays no part
        ids, at = toks, len(toks) - 1
    logits = GPTModel(CFG).apply({"params": params}, np.array([ids], np.int32))[0, at]
    return np.asarray(jax.nn.softmax(logits))


# ----------------------------------------------------------------- ClassifierConfig


def test_config_round_trips_through_json():
    s = spec("last")
    again = ClassifierConfig.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and hash(again) == hash(s) and again.labels == LABELS


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(labels=("a", "b")), "num_classes=3 but 2 labels"),
        (dict(labels=("a", "a", "b")), "distinct"),
        (dict(pool="middle"), "pool must be one of"),
        (dict(max_length=0), "max_length must be an int in 1..64"),
        (dict(max_length=65), "max_length must be an int in 1..64"),
        (dict(model=dataclasses.replace(CFG, num_classes=None)), "num_classes=None"),
    ],
)
def test_config_rejects_what_cannot_work(changes, message):
    with pytest.raises(ValueError, match=message):
        spec(**changes)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda d: d.pop("labels"), r"missing key\(s\) \['labels'\]"),
        (lambda d: d["model"].pop("emb_dim"), "key 'model'"),
        (lambda d: d["model"].update(n_heads=5), "key 'model'.*not divisible"),
        (lambda d: d.update(labels="abc"), "key 'labels'"),
    ],
)
def test_from_dict_names_the_bad_key(mangle, message):
    d = spec().to_dict()
    mangle(d)
    with pytest.raises(ValueError, match=message):
        ClassifierConfig.from_dict(d)


def test_save_refuses_params_of_another_model(tmp_path):
    with pytest.raises(ValueError, match="head/kernel: .*\\(32, 2\\) vs \\(32, 3\\)"):
        save_classifier(tmp_path, init_params(dataclasses.replace(CFG, num_classes=2)), spec())
    assert not (tmp_path / "classifier.json").exists()


# ----------------------------------------------------------------- save / load / predict


def test_run_folder_holds_everything(runs):
    run_dir = runs["last"]
    meta = json.loads((run_dir / "classifier.json").read_text())
    assert meta["format"] == 1 and meta["labels"] == list(LABELS) and meta["pool"] == "last"
    assert meta["max_length"] == MAX_LENGTH and meta["model"]["num_classes"] == 3
    assert "encoder.json" in meta["tokenizer"]
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["classifier", "classifier.json", "encoder.json", "vocab.bpe"]  # no .part


@pytest.mark.parametrize("pool", ["last", "last-real"])
def test_predict_equals_the_full_forward(runs, pool):
    classifier = Classifier.load(runs[pool])
    assert classifier.labels == LABELS and classifier.spec == spec(pool)
    pred = classifier.predict(TEXTS, batch_size=2)  # 3 batches, the last one padded
    want = np.stack(
        [reference_probs(classifier.params, classifier.tokenizer, t, pool) for t in TEXTS]
    )
    np.testing.assert_allclose(pred.probs, want, atol=2e-6)
    np.testing.assert_allclose(pred.probs.sum(1), 1.0, rtol=1e-6)
    assert pred.labels == [LABELS[k] for k in want.argmax(1)]
    assert pred.truncated.tolist() == [False, False, True, False, False]
    assert pred.class_names == LABELS and len(pred) == len(TEXTS)


def test_module_predict_proba_agrees(runs):
    model, params, s = load_classifier(runs["last-real"])
    got = predict_proba(
        model, params, get_tokenizer(runs["last-real"]), TEXTS, s.max_length, s.pool
    )
    np.testing.assert_allclose(
        got, Classifier.load(runs["last-real"]).predict_proba(TEXTS), atol=1e-6
    )


def test_empty_list_and_bad_texts(runs):
    classifier = Classifier.load(runs["last"])
    pred = classifier.predict([])
    assert pred.labels == [] and pred.probs.shape == (0, 3) and pred.truncated.shape == (0,)
    with pytest.raises(TypeError, match="not one string"):
        classifier.predict("one text")
    with pytest.raises(TypeError, match=r"texts\[1\] is float"):
        classifier.predict(["fine", float("nan")])
    with pytest.raises(ValueError, match="batch_size"):
        classifier.predict(["x"], batch_size=0)


def test_predictions_compile_once_per_shape(runs, monkeypatch):
    """Equal shapes reuse the compiled program, whatever the weights: a trace would
    call pooling's classify (looked up when the function is traced)."""
    traces = []
    real = clf.classify
    monkeypatch.setattr(clf, "classify", lambda *a, **k: (traces.append(1), real(*a, **k))[1])
    classifier = Classifier.load(runs["last"])
    first = classifier.predict_proba(TEXTS, batch_size=2)  # may trace (a new shape)
    traces.clear()
    size = clf.class_probs._cache_size() if hasattr(clf.class_probs, "_cache_size") else None
    np.testing.assert_array_equal(classifier.predict_proba(TEXTS, batch_size=2), first)
    other = Classifier(classifier.spec, init_params(CFG, seed=4), classifier.tokenizer)
    second = other.predict_proba(TEXTS, batch_size=2)
    assert traces == []
    if size is not None:
        assert clf.class_probs._cache_size() == size
    assert not np.allclose(first, second)  # the weights are arguments, not constants


# ----------------------------------------------------------------- damaged folders


def damage(run_dir, how):
    meta = run_dir / "classifier.json"
    if how == "no json":
        meta.unlink()
    elif how == "invalid json":
        meta.write_text('{"format": 1, "labels": [')
    elif how == "key missing":
        meta.write_text(
            json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "pool"})
        )
    elif how == "no weights":
        import shutil

        shutil.rmtree(run_dir / "classifier")


@pytest.mark.parametrize(
    "how, message",
    [
        ("no json", "is not a finished run: no classifier.json"),
        ("invalid json", "classifier.json: not valid JSON"),
        ("key missing", r"classifier.json: missing key\(s\) \['pool'\]"),
        ("no weights", "holds no weights"),
    ],
)
def test_damaged_folder_is_one_clear_line(tmp_path, how, message, capsys):
    run_dir = save_classifier(tmp_path / "run", init_params(CFG, seed=3), spec()).parent
    damage(run_dir, how)
    with pytest.raises((OSError, ValueError), match=message) as err:
        load_classifier(run_dir)
    assert str(run_dir) in str(err.value) and "\n" not in str(err.value)
    assert classify.main(["--run", str(run_dir), "some text"]) == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("error: ") and message.replace("\\", "") in stderr.replace("\\", "")
    assert len(stderr.splitlines()) == 1


def _damage_weights(run_dir, how):
    """Damage the largest file of the classifier's weights: the one it loads from,
    weights.bin (orbax's files of a folder saved without it: test_weights_file)."""
    data = max(
        (f for f in (run_dir / "classifier").rglob("*") if f.is_file()),
        key=lambda f: f.stat().st_size,
    )
    raw = bytearray(data.read_bytes())
    if how == "flip":
        for i in range(len(raw) // 2, len(raw) // 2 + 4):
            raw[i] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif how == "truncate":
        data.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        data.unlink()


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_damaged_weights_are_named_in_our_words(tmp_path, how, capsys):
    run_dir = save_classifier(tmp_path / "run", init_params(CFG, seed=3), spec()).parent
    _damage_weights(run_dir, how)
    with pytest.raises(ValueError) as err:
        load_classifier(run_dir)
    said = str(err.value)
    assert said.startswith(f"{run_dir / 'classifier'}: ") and "\n" not in said
    assert "damaged" in said and "train again" in said
    for internal in ("pybind11", "tensorstore", "TensorStore", "OCDBT", "orbax", "Traceback"):
        assert internal not in said, said
    assert classify.main(["--run", str(run_dir), "some text"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {said}"


def test_the_api_refuses_the_texts_the_server_refuses(runs):
    """One rule (data.texts) for both: the same texts refused, with the same words."""
    from gpt2_jax.serve.request_checks import BadRequest, Limits, parse_texts

    classifier = Classifier.load(runs["last-real"])
    for text in ["", "   \n\t", "fine \ud800 here"]:
        with pytest.raises(BadRequest) as by_server:
            parse_texts(json.dumps({"texts": ["ok", text]}).encode(), Limits())
        with pytest.raises(ValueError) as by_api:
            classifier.predict(["ok", text])
        assert str(by_api.value) == str(by_server.value)
        assert str(by_api.value).startswith("texts[1] ")
    assert classifier.predict(["ok", "\u00e9t\u00e9 \U0001f600"]).labels  # valid Unicode passes


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_classifier(tmp_path / "nowhere")


def test_classifier_json_of_before_format_1_still_loads(tmp_path):
    run_dir = save_classifier(tmp_path / "run", init_params(CFG, seed=3), spec("last")).parent
    meta = json.loads((run_dir / "classifier.json").read_text())
    old = {
        "config": meta["model"],
        "max_length": MAX_LENGTH,
        "pool": "last",
        "labels": list(LABELS),
    }
    (run_dir / "classifier.json").write_text(json.dumps(old))
    assert load_classifier(run_dir)[2] == spec("last")


# ----------------------------------------------------------------- CLI


def parse_stdout(stdout):
    header, *rows = stdout.rstrip("\n").split("\n")
    return header.split("\t"), [row.split("\t") for row in rows]


def test_cli_with_arguments(runs):
    out = run_cli("--run", runs["last-real"], *TEXTS[:3])
    assert out.returncode == 0, out.stderr
    header, rows = parse_stdout(out.stdout)
    assert header == ["label", "p(billing)", "p(bug)", "p(praise)", "text"]
    want = Classifier.load(runs["last-real"]).predict(TEXTS[:3])
    assert [r[0] for r in rows] == want.labels and [r[4] for r in rows] == TEXTS[:3]
    np.testing.assert_allclose([[float(x) for x in r[1:4]] for r in rows], want.probs, atol=1e-4)
    assert "1 of 3 texts were longer than 40 tokens" in out.stderr


def test_cli_reads_stdin(runs):
    out = run_cli("--run", runs["last"], stdin="first line\n\nsecond\tline with a tab\n")
    assert out.returncode == 0, out.stderr
    _, rows = parse_stdout(out.stdout)
    assert [r[-1] for r in rows] == ["first line", "second\\tline with a tab"]
    assert "0 of 2 texts" in out.stderr


def test_cli_csv_in_jsonl_out(runs, tmp_path):
    import pandas as pd

    pd.DataFrame({"id": range(len(TEXTS)), "message": TEXTS}).to_csv(
        tmp_path / "in.csv", index=False
    )
    out = run_cli(
        "--run",
        runs["last"],
        "--input",
        tmp_path / "in.csv",
        "--text-column",
        "message",
        "--output",
        tmp_path / "out.jsonl",
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert list(rows[0]) == ["text", "label", "p_billing", "p_bug", "p_praise", "truncated"]
    want = Classifier.load(runs["last"]).predict(TEXTS)
    assert [r["text"] for r in rows] == TEXTS and [r["label"] for r in rows] == want.labels
    assert [r["truncated"] for r in rows] == want.truncated.tolist()
    np.testing.assert_allclose([[r[f"p_{n}"] for n in LABELS] for r in rows], want.probs, atol=1e-6)
    assert "1 of 5 texts were longer than 40 tokens" in out.stderr


@pytest.mark.parametrize(
    "name, content",
    [
        ("in.csv", None),  # no such file
        ("in.csv", "id,message\n1,hello\n"),  # no text column
        ("in.jsonl", "not json\n{also not\n"),  # several problems: still one line
    ],
)
def test_cli_unreadable_input(runs, tmp_path, capsys, name, content):
    if content is not None:
        (tmp_path / name).write_text(content)
    assert classify.main(["--run", str(runs["last"]), "--input", str(tmp_path / name)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / name) in err and err.count("\n") == 1


def test_cli_no_texts(runs):
    out = run_cli("--run", runs["last"], stdin="\n  \n")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: no texts to classify: give them as arguments, with --input FILE, or one per "
        "line on stdin"
    ]


def test_cli_stdin_bytes_crlf_and_byte_order_mark(runs):
    stdin = "\ufefffirst line\r\n\r\nsecond \u00a3 line\r\nthird\n".encode("utf-8")
    out = run_cli("--run", runs["last"], stdin=stdin)
    assert out.returncode == 0, out.stderr
    _, rows = parse_stdout(out.stdout)
    assert [r[-1] for r in rows] == ["first line", "second \u00a3 line", "third"]  # no \\r
    assert "0 of 3 texts" in out.stderr


def test_cli_refuses_stdin_that_is_not_utf8(runs):
    out = run_cli("--run", runs["last"], stdin=b"fine\r\nWIN \xa3100 now\n")  # Latin-1 pound
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "error: stdin line 2, byte 5: 0xa3 is not UTF-8 (send UTF-8 text)"
    ]


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "in.csv",
            b"text\nfine\nWIN \xa3100\n",
            "in.csv line 3, byte 5: 0xa3 is not UTF-8 (save the file as UTF-8)",
        ),
        (
            "in.jsonl",
            b'{"text": "ok"}\n{"text": "\xe9t\xe9"}\n',
            "in.jsonl line 2, byte 11: 0xe9 is not UTF-8",
        ),
        ("in.csv", b"text\nfine\n  \n", "in.csv line 3, column 'text': empty text"),
    ],
)
def test_cli_input_file_problems_name_the_line(runs, tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    assert classify.main(["--run", str(runs["last"]), "--input", str(tmp_path / name)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / name}") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "texts, message",
    [
        (
            ["fine", ""],
            "error: TEXT argument 2 is empty; give a text with at least one visible "
            "character, or leave the argument out",
        ),
        ([" \t "], "error: TEXT argument 1 is empty"),
        (["ok", "WIN \udca3100"], "error: TEXT argument 2, character 5: a byte that is not UTF-8"),
    ],
)
def test_cli_refuses_empty_or_undecodable_arguments(runs, capsys, texts, message):
    assert classify.main(["--run", str(runs["last"]), *texts]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_stdin_texts_without_a_classifier():
    import io

    lines = io.BytesIO(b"\xef\xbb\xbfa\r\n\n  \r\nb\tc\nlast without newline")
    assert classify.stdin_texts(lines) == ["a", "b\tc", "last without newline"]
    with pytest.raises(classify.InputError, match=r"^stdin line 3, byte 1: 0xff is not UTF-8"):
        classify.stdin_texts(io.BytesIO(b"a\nb\n\xff\n"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run", "x", "a", "--input", "f.csv"], "not both"),
        (["--run", "x", "a", "--output", "out.txt"], "must end in one of"),
        (["--run", "x", "a", "--batch-size", "0"], "--batch-size must be positive"),
        (["a"], "--run"),
    ],
)
def test_cli_rejects_impossible_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        classify.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_help_explains():
    text = classify.parser().format_help()
    for words in (
        "--run",
        "--input",
        "--format",
        "--text-column",
        "--output",
        "argmax",
        "stdin",
        "truncated",
        "p_<class>",
    ):
        assert words in text


def test_special_token_in_a_text_is_named(runs):
    clf = Classifier.load(runs["last-real"])
    with pytest.raises(ValueError, match="^text 2 contains GPT-2's special token"):
        clf.predict(["fine", "x <|endoftext|> y"])


# ----------------------------------------------------------------- terminal output


def test_print_table_clips_texts_to_the_line(runs, capsys):
    pred = Classifier.load(runs["last"]).predict(TEXTS)
    classify.print_table(TEXTS, pred, LABELS, columns=80)
    header, rows = parse_stdout(capsys.readouterr().out)
    assert header == ["label", "p(billing)", "p(bug)", "p(praise)", "text"]
    for row, text, label, probs in zip(rows, TEXTS, pred.labels, pred.probs):
        assert row[:4] == [label, *(f"{p:.4f}" for p in probs)]  # unchanged
        assert len("\t".join(row).expandtabs()) < 80
        assert row[4] == text if len(text) < 40 else row[4].endswith("...")
    assert rows[2][4] == LONG[: len(rows[2][4]) - 3] + "..."
    classify.print_table(TEXTS, pred, LABELS, columns=10)  # narrower: MIN_TEXT still shown
    assert parse_stdout(capsys.readouterr().out)[1][2][4] == LONG[:17] + "..."
    classify.print_table(TEXTS, pred, LABELS)  # not a terminal: whole
    assert parse_stdout(capsys.readouterr().out)[1][2][4] == LONG


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_cli_on_a_terminal_fits_its_width(runs):
    import pty

    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="72")
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.classify", "--run", str(runs["last"]), LONG],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    lines = b"".join(chunks).decode().splitlines()
    assert lines[1].endswith("...") and len(lines[1].expandtabs()) == 71


# ----------------------------------------------------------------- --truncate


@pytest.mark.parametrize("truncate", ["tail", "head+tail"])
def test_saved_classifier_cuts_long_texts_as_it_was_trained(tmp_path, bpe_dir, truncate):
    params = init_params(CFG, seed=3)
    run_dir = save_classifier(
        tmp_path / truncate, params, spec("last-real", truncate=truncate), bpe_dir=bpe_dir
    ).parent
    assert json.loads((run_dir / "classifier.json").read_text())["truncate"] == truncate
    loaded = Classifier.load(run_dir)
    assert loaded.spec.truncate == truncate
    text = "thanks, love it! " + LONG + " and then the app crashes when I open settings"
    toks = get_tokenizer(bpe_dir).encode(text)
    h = MAX_LENGTH - MAX_LENGTH // 2
    ids = toks[-MAX_LENGTH:] if truncate == "tail" else toks[:h] + toks[h - MAX_LENGTH :]
    logits = GPTModel(CFG).apply({"params": params}, np.array([ids], np.int32))[0, -1]
    pred = loaded.predict([text, TEXTS[0]])
    assert pred.truncated.tolist() == [True, False]
    np.testing.assert_allclose(pred.probs[0], jax.nn.softmax(logits), atol=1e-5)
    head = Classifier.load(save_classifier(tmp_path / "head", params, spec()).parent)
    assert np.abs(head.predict([text]).probs[0] - pred.probs[0]).max() > 1e-4
    np.testing.assert_allclose(head.predict([TEXTS[0]]).probs[0], pred.probs[1], atol=1e-6)


def test_classifier_json_without_truncate_cuts_the_head(tmp_path):
    run_dir = save_classifier(tmp_path / "run", init_params(CFG, seed=3), spec()).parent
    meta = json.loads((run_dir / "classifier.json").read_text())
    del meta["truncate"]
    (run_dir / "classifier.json").write_text(json.dumps(meta))
    assert load_classifier(run_dir)[2].truncate == "head"
    with pytest.raises(ValueError, match="truncate must be one of"):
        spec(truncate="middle")
