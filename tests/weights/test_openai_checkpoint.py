import json
import shutil

import numpy as np
import pytest
from conftest import TINY_SETTINGS

from gpt2_jax.weights.openai import CheckpointError, load_gpt2, load_weights
from gpt2_jax.weights.synthetic import openai_variables, write_openai_model_dir, write_tf_checkpoint


def test_round_trip_is_bit_exact(tiny_model_dir):
    settings, params = load_gpt2(tiny_model_dir)
    assert settings == TINY_SETTINGS
    assert sorted(params) == ["b", "blocks", "g", "wpe", "wte"]
    assert len(params["blocks"]) == TINY_SETTINGS["n_layer"]
    written = openai_variables(TINY_SETTINGS, seed=1)  # what the fixture wrote
    for name, array in written.items():
        parts = name.split("/")[1:]
        if parts[0].startswith("h"):
            got = params["blocks"][int(parts[0][1:])]
            parts = parts[1:]
        else:
            got = params
            parts = parts[1:] if parts[0] == "ln_f" else parts
        for key in parts:
            got = got[key]
        expected = array[0] if array.ndim == 3 else array
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected, err_msg=name)
    e = TINY_SETTINGS["n_embd"]
    assert params["blocks"][0]["attn"]["c_attn"]["w"].shape == (e, 3 * e)


def test_openai_file_layout(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {
        "checkpoint",
        "hparams.json",
        "model.ckpt.index",
        "model.ckpt.meta",
        "model.ckpt.data-00000-of-00001",
    } <= names
    import tensorflow as tf

    shapes = dict(tf.train.list_variables(str(tiny_model_dir / "model.ckpt")))
    assert shapes["model/h0/attn/c_attn/w"] == [1, 32, 96]
    assert shapes["model/wte"] == [50257, 32]


def test_load_weights_tree_names(tiny_model_dir):
    _, params = load_gpt2(tiny_model_dir)
    tree = load_weights(params)
    assert sorted(tree) == ["h0", "h1", "ln_f", "wpe", "wte"]
    assert tree["h1"]["mlp"]["c_fc"]["kernel"] is params["blocks"][1]["mlp"]["c_fc"]["w"]
    assert tree["ln_f"]["scale"] is params["g"]


def _broken_dir(tmp_path, mutate):
    variables = openai_variables(TINY_SETTINGS, seed=2)
    settings = dict(TINY_SETTINGS)
    settings = mutate(variables, settings) or settings
    write_tf_checkpoint(tmp_path, variables)
    (tmp_path / "hparams.json").write_text(json.dumps(settings))
    return tmp_path


def test_wrong_shape_names_variable_and_shapes(tmp_path):
    def mutate(v, s):
        v["model/h1/mlp/c_fc/w"] = np.zeros((1, 32, 100), np.float32)

    with pytest.raises(CheckpointError, match=r"model/h1/mlp/c_fc/w.*\(32, 100\).*\(32, 128\)"):
        load_gpt2(_broken_dir(tmp_path, mutate))


def test_missing_variable_is_named(tmp_path):
    def mutate(v, s):
        del v["model/h0/ln_2/b"]

    with pytest.raises(CheckpointError, match=r"missing.*model/h0/ln_2/b"):
        load_gpt2(_broken_dir(tmp_path, mutate))


def test_hparams_disagreeing_with_checkpoint(tmp_path):
    def mutate(v, s):
        return dict(s, n_embd=64, n_head=4)

    with pytest.raises(
        CheckpointError,
        match=r"variable .model/h0/attn/c_attn/b. has shape \(96,\), expected \(192,\)",
    ):
        load_gpt2(_broken_dir(tmp_path, mutate))


def test_missing_files_are_named(tmp_path, tiny_model_dir):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(FileNotFoundError, match="model.ckpt.data-00000-of-00001"):
        load_gpt2(copy)
    (copy / "hparams.json").unlink()
    with pytest.raises(FileNotFoundError, match="hparams.json"):
        load_gpt2(copy)


def test_truncated_data_file(tmp_path, tiny_model_dir):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    data = copy / "model.ckpt.data-00000-of-00001"
    whole = data.read_bytes()
    data.write_bytes(whole[:1000])
    with pytest.raises(
        CheckpointError,
        match=f"1,000 bytes, but the variables of hparams.json "
        rf".* take {len(whole):,}: a truncated download",
    ):
        load_gpt2(copy)
    data.write_bytes(whole)
    index = copy / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cannot read TF checkpoint .*model.ckpt"):
        load_gpt2(copy)


def test_writer_helper_copies_bpe(tmp_path):
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    (bpe / "encoder.json").write_text("{}")
    (bpe / "vocab.bpe").write_text("#version: 0.2\n")
    out = write_openai_model_dir(tmp_path / "m", TINY_SETTINGS, bpe_dir=bpe)
    assert (out / "encoder.json").read_text() == "{}"
