"""The classifier's weights.bin: written with the SHA-256 recorded in classifier.json,
checked as it is read, and what a classifier loads from; folders saved before it (orbax
only) still load, predict the same and refuse damaged files."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig, save_classifier
from gpt2_jax.classifier.saved import load_classifier
from gpt2_jax.classifier.weights_file import (
    WEIGHTS_FILE,
    prefetch,
    read_weights,
    weights_sha256,
    write_weights,
)
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params
from gpt2_jax.util.files import file_sha256
from gpt2_jax.util.tree import named_leaves

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=2, num_classes=3
)
SPEC = ClassifierConfig(model=CFG, labels=("a", "b", "c"), pool="last-real", max_length=40)
TEXTS = ["thanks, love it", "the app crashes when I open settings", "ok"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, bpe_dir):
    """``(run folder, the weights saved)``."""
    params = init_params(CFG, seed=3)
    root = tmp_path_factory.mktemp("weights_file")
    return save_classifier(root / "run", params, SPEC, bpe_dir=bpe_dir).parent, params


def copy(run_dir, to):
    return shutil.copytree(run_dir, to)


def as_old_folder(run_dir):
    """The folder as save_classifier wrote it before weights.bin: orbax's files only."""
    (run_dir / "classifier" / WEIGHTS_FILE).unlink()
    meta = json.loads((run_dir / "classifier.json").read_text())
    del meta["weights_file"]
    (run_dir / "classifier.json").write_text(json.dumps(meta))
    return run_dir


def same_leaves(a, b) -> bool:
    a, b = named_leaves(a), named_leaves(b)
    return a.keys() == b.keys() and all(
        np.asarray(a[n]).dtype == np.asarray(b[n]).dtype and np.array_equal(a[n], b[n]) for n in a
    )


def test_the_file_is_written_with_the_recorded_sha256(saved):
    run_dir, params = saved
    meta = json.loads((run_dir / "classifier.json").read_text())
    assert meta["weights_file"] == WEIGHTS_FILE
    path = run_dir / "classifier" / WEIGHTS_FILE
    assert file_sha256(path) == meta["weights_sha256"] == weights_sha256(params)


def test_the_classifier_loads_from_the_file_alone(saved, tmp_path):
    """orbax's files gone, the weights still load, exactly: weights.bin is what is read."""
    run_dir = copy(saved[0], tmp_path / "run")
    for f in (run_dir / "classifier").iterdir():
        if f.name != WEIGHTS_FILE:
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    assert same_leaves(load_classifier(run_dir)[1], saved[1])


def test_an_old_folder_loads_and_predicts_the_same(saved, tmp_path):
    old = as_old_folder(copy(saved[0], tmp_path / "old"))
    assert same_leaves(load_classifier(old)[1], saved[1])
    new_pred = Classifier.load(saved[0]).predict(TEXTS)
    old_pred = Classifier.load(old).predict(TEXTS)
    np.testing.assert_allclose(old_pred.probs, new_pred.probs, rtol=0, atol=1e-6)
    assert old_pred.labels == new_pred.labels


def test_an_old_folder_with_damaged_orbax_files_is_refused(saved, tmp_path):
    old = as_old_folder(copy(saved[0], tmp_path / "old"))
    data = max((old / "classifier" / "d").iterdir(), key=lambda f: f.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged") as err:
        load_classifier(old)
    assert str(err.value).startswith(f"{old / 'classifier'}: ") and "\n" not in str(err.value)


def test_a_weights_file_other_than_ours_is_refused(saved, tmp_path):
    run_dir = copy(saved[0], tmp_path / "run")
    meta = json.loads((run_dir / "classifier.json").read_text())
    (run_dir / "classifier.json").write_text(json.dumps({**meta, "weights_file": "../x.bin"}))
    with pytest.raises(ValueError, match="weights_file is '../x.bin'") as err:
        load_classifier(run_dir)
    assert "\n" not in str(err.value)


def test_a_file_of_other_weights_is_refused(saved, tmp_path):
    """Whole and readable, but not the weights recorded: refused before use."""
    run_dir = copy(saved[0], tmp_path / "run")
    write_weights(run_dir / "classifier" / WEIGHTS_FILE, init_params(CFG, seed=4))
    with pytest.raises(ValueError, match=f"{WEIGHTS_FILE} is damaged"):
        load_classifier(run_dir)


def test_round_trip_of_dtypes_and_shapes(tmp_path):
    params = {
        "a": {"w": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3)},
        "b": np.float32(2.5).reshape(()),
        "c": np.arange(4, dtype=np.int32),
    }
    sha = write_weights(tmp_path / "w.bin", params)
    assert sha == weights_sha256(params) == file_sha256(tmp_path / "w.bin")
    back = read_weights(tmp_path / "w.bin", sha)
    assert same_leaves(back, params)
    with pytest.raises(ValueError, match="SHA-256"):
        read_weights(tmp_path / "w.bin", "0" * 64)


def test_a_prefetch_is_used_when_it_holds_the_recorded_weights(tmp_path):
    a, b = {"w": np.arange(4, dtype=np.float32)}, {"w": np.ones(4, np.float32)}
    path = tmp_path / "w.bin"
    sha_a = write_weights(path, a)
    prefetch(path).result()
    path.unlink()  # what read_weights returns is what the prefetch read
    assert same_leaves(read_weights(path, sha_a), a)
    write_weights(path, a)
    prefetch(path).result()
    sha_b = write_weights(path, b)  # changed after the prefetch: read again
    assert same_leaves(read_weights(path, sha_b), b)


def test_the_leaves_read_are_read_only(saved):
    leaves = named_leaves(load_classifier(saved[0])[1])
    assert not any(np.asarray(leaf).flags.writeable for leaf in leaves.values())
