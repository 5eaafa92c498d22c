"""Hugging Face interop: GPT-2 folders in Hugging Face's layout in, classifiers and
backbones out, checked against ``transformers`` itself; the Hub through a stand-in on
127.0.0.1; TensorFlow needed only for OpenAI's checkpoint."""

import copy
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, TINY_SETTINGS, needs_real_bpe
from hub_server import serve_hub

from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig, save_classifier
from gpt2_jax.classifier.export import (
    ExportError,
    export_backbone,
    export_classifier,
    fold_head_bias,
)
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.weights import hf as hf_checkpoint
from gpt2_jax.weights.hf import load_hf_gpt2, save_hf_gpt2
from gpt2_jax.weights.hub import HubError, fetch_hf_repo
from gpt2_jax.weights.openai import CheckpointError, lab_params, load_gpt2, load_weights
from gpt2_jax.weights.pretrained import folder_format, load_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MESSAGES = [
    "WINNER!! You have been selected to receive a $900 prize. Call now!",
    "Are we still on for lunch tomorrow?",
    "Free entry in 2 a wkly comp to win FA Cup final tkts",
    "ok",
    "I'll be late, the bus broke down again :(",
    "URGENT: your account has been suspended, reply with your PIN",
]


def _same_params(a: dict, b: dict) -> None:
    flat_a, flat_b = hf_checkpoint.flat_variables(a), hf_checkpoint.flat_variables(b)
    assert flat_a.keys() == flat_b.keys()
    for name in flat_a:
        assert np.asarray(flat_a[name]).dtype == np.asarray(flat_b[name]).dtype, name
        assert np.array_equal(flat_a[name], flat_b[name]), name


@pytest.fixture(scope="module")
def hf_from_tf(tiny_model_dir, tmp_path_factory):
    """The tiny OpenAI folder, converted with export_backbone."""
    return export_backbone(tiny_model_dir, tmp_path_factory.mktemp("hf") / "tiny")


@pytest.fixture(scope="module")
def transformers_folder(tmp_path_factory, bpe_dir):
    """A folder written by transformers itself: a GPT-2 of none of OpenAI's sizes, every
    weight random (LayerNorms and biases too), and its tokenizer from our BPE files."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=40, n_embd=48, n_layer=3, n_head=6
    )
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
            elif ".ln_" in name:
                p.normal_(1, 0.2)
    folder = tmp_path_factory.mktemp("hf") / "odd-gpt2"
    model.save_pretrained(folder)
    files = tmp_path_factory.mktemp("bpe")
    shutil.copyfile(bpe_dir / "encoder.json", files / "vocab.json")
    shutil.copyfile(bpe_dir / "vocab.bpe", files / "merges.txt")
    transformers.GPT2Tokenizer.from_pretrained(files).save_pretrained(folder)
    return folder, model.eval()


def test_tf_checkpoint_to_hf_folder_and_back_is_bit_identical(tiny_model_dir, hf_from_tf, bpe_dir):
    assert folder_format(tiny_model_dir) == "openai" and folder_format(hf_from_tf) == "hf"
    settings, params = load_gpt2(tiny_model_dir)
    settings_hf, params_hf = load_hf_gpt2(hf_from_tf)
    assert settings_hf == {k: settings[k] for k in TINY_SETTINGS}
    _same_params(params, params_hf)
    # and the Flax tree, through the inverse mapping too
    _same_params(lab_params(load_weights(params_hf)), params)
    # the tokenizer files travel under Hugging Face's names, with the same contents
    assert (hf_from_tf / "vocab.json").read_bytes() == (bpe_dir / "encoder.json").read_bytes()
    assert (hf_from_tf / "merges.txt").read_bytes() == (bpe_dir / "vocab.bpe").read_bytes()


def test_folder_written_by_transformers_gives_its_logits(transformers_folder):
    folder, hf_model = transformers_folder
    settings, params = load_pretrained(folder)
    assert settings == {"n_vocab": 50257, "n_ctx": 40, "n_embd": 48, "n_head": 6, "n_layer": 3}
    tokenizer = get_tokenizer(folder)  # from the folder's vocab.json + merges.txt
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    ids = [tokenizer.encode(m)[:40] for m in MESSAGES]
    assert ids == [hf_tokenizer(m)["input_ids"][:40] for m in MESSAGES]
    cfg = GPTConfig.from_settings(settings)
    model = GPTModel(cfg)
    tree = load_weights(params)
    for row in ids:
        ours = np.asarray(model.apply({"params": tree}, jnp.asarray([row])))
        with torch.no_grad():
            theirs = hf_model(torch.tensor([row])).logits.numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    # the same check fails for a weight moved by a little: the comparison has teeth
    bias = tree["h2"]["mlp"]["c_proj"]["bias"]  # (a constant shift would cancel in ln_f)
    tree["h2"]["mlp"]["c_proj"]["bias"] = bias + 1e-2 * jnp.linspace(-1, 1, bias.shape[0])
    moved = np.asarray(model.apply({"params": tree}, jnp.asarray([ids[0]])))
    with torch.no_grad():
        theirs = hf_model(torch.tensor([ids[0]])).logits.numpy()
    assert np.abs(moved - theirs).max() > 1e-3


def _rewrite(src, dst, *, drop=None, reshape=None, config=None, nan=None, twice=None):
    """A copy of the HF folder ``src`` with one tensor dropped, reshaped, spoilt with a
    NaN or stored a second time under the ``transformer.`` prefix, or config keys
    changed."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    if drop:
        del tensors[drop]
    if reshape:
        tensors[reshape] = tensors[reshape][..., :-1].copy()
    if nan:
        tensors[nan][0] = np.nan
    if twice:
        tensors["transformer." + twice] = tensors[twice]
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    "change, named",
    [
        ({"drop": "h.1.mlp.c_fc.bias"}, "h.1.mlp.c_fc.bias (128,)"),
        ({"reshape": "h.0.attn.c_attn.weight"}, "'h.0.attn.c_attn.weight' has shape (32, 95)"),
        ({"config": {"model_type": "llama"}}, "model_type 'llama'"),
        ({"config": {"activation_function": "relu"}}, "activation_function='relu'"),
        ({"config": {"n_inner": 100}}, "n_inner=100"),
        ({"nan": "h.1.ln_2.bias"}, "'h.1.ln_2.bias' holds NaN"),
        ({"twice": "ln_f.bias"}, "'ln_f.bias' is stored twice"),
        ({"config": {"n_layer": 10**6}}, "28 tensors, but config.json"),
    ],
)
def test_broken_folders_are_refused_by_name(hf_from_tf, tmp_path, change, named):
    folder = _rewrite(hf_from_tf, tmp_path / "broken", **change)
    with pytest.raises(CheckpointError, match="^" + str(folder).replace("\\", "\\\\")) as err:
        load_pretrained(folder)
    assert named in str(err.value)


def test_odd_folders_get_one_clear_error(hf_from_tf, tiny_model_dir, tmp_path):
    both = shutil.copytree(tiny_model_dir, tmp_path / "both")
    shutil.copyfile(hf_from_tf / "config.json", both / "config.json")
    with pytest.raises(FileNotFoundError, match="both OpenAI's hparams.json and Hugging Face's"):
        load_pretrained(both)
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copyfile(hf_from_tf / "config.json", config_only / "config.json")
    from gpt2_jax.weights.pretrained import read_folder_settings  # enough for --weights random

    assert read_folder_settings(config_only) == TINY_SETTINGS
    with pytest.raises(FileNotFoundError, match="config.json but no weights"):
        load_pretrained(config_only)
    index = _rewrite(hf_from_tf, tmp_path / "index", config={})
    (index / "model.safetensors").rename(index / "part-1.safetensors")
    for weight_map, says in [
        ({"wte.weight": 3}, "must be file names"),
        ({"wte.weight": "../part-1.safetensors"}, "is not a file in"),
    ]:
        (index / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        with pytest.raises(CheckpointError, match=says):
            load_pretrained(index)
    (index / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"wte.weight": "part-1.safetensors"}})
    )
    _same_params(load_pretrained(index)[1], load_hf_gpt2(hf_from_tf)[1])  # shards work
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copyfile(hf_from_tf / "config.json", pickled / "config.json")
    torch.save(torch.zeros(3), pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_pretrained(pickled)
    torch.save({"wte.weight": torch.zeros(3, dtype=torch.int64)}, pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="'wte.weight' is torch.int64"):
        load_pretrained(pickled)


def test_untied_lm_head_and_stray_tensors_are_refused(hf_from_tf, tmp_path):
    settings, params = load_hf_gpt2(hf_from_tf)
    untied = np.asarray(params["wte"]) + 1.0
    folder = save_hf_gpt2(
        tmp_path / "untied",
        settings,
        params,
        prefix="transformer.",
        extra_tensors={"lm_head.weight": untied},
    )
    with pytest.raises(CheckpointError, match="lm_head.weight differs from wte.weight"):
        load_hf_gpt2(folder)
    tied = save_hf_gpt2(
        tmp_path / "tied",
        settings,
        params,
        prefix="transformer.",
        extra_tensors={"lm_head.weight": np.asarray(params["wte"])},
    )
    _same_params(load_hf_gpt2(tied)[1], params)
    stray = save_hf_gpt2(
        tmp_path / "stray",
        settings,
        params,
        extra_tensors={"h.9.attn.c_attn.weight": np.zeros((2, 2), np.float32)},
    )
    with pytest.raises(CheckpointError, match="unexpected tensor 'h.9.attn.c_attn.weight'"):
        load_hf_gpt2(stray)


def test_half_precision_and_pytorch_pickles_load_as_float32(
    transformers_folder, tmp_path, monkeypatch
):
    folder, hf_model = transformers_folder
    _, params = load_pretrained(folder)
    bf16 = tmp_path / "bf16"
    copy.deepcopy(hf_model).to(torch.bfloat16).save_pretrained(bf16)
    shutil.copyfile(folder / "config.json", bf16 / "config.json")
    _, halves = load_pretrained(bf16)
    for name, full in hf_checkpoint.flat_variables(params).items():
        half = hf_checkpoint.flat_variables(halves)[name]
        assert half.dtype == np.float32
        # bfloat16 keeps 8 bits of mantissa: within 2^-8 relative, and not identical
        np.testing.assert_allclose(half, full, rtol=2**-8, atol=0)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copyfile(folder / "config.json", pickled / "config.json")
    torch.save(hf_model.state_dict(), pickled / "pytorch_model.bin")
    _same_params(load_pretrained(pickled)[1], params)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(
        CheckpointError, match="needs torch .* convert it once to model.safetensors"
    ):
        load_pretrained(pickled)


def test_export_refuses_a_folder_that_is_not_empty(hf_from_tf, tiny_model_dir):
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_backbone(tiny_model_dir, hf_from_tf)


# --------------------------------------------------------------------------- classifier out

LABELS = ("ham", "promo", "spam")


def _classifier_run(root, bpe_dir, pool="last-real", lora_rank=0, seed=5, truncate="head"):
    """A saved classifier with random weights, a head bias large enough to matter, and
    (for LoRA) adapters that are not zero."""
    cfg = GPTConfig.from_settings(
        TINY_SETTINGS, num_classes=len(LABELS), lora_rank=lora_rank, lora_alpha=8.0
    )
    params = jax.tree.map(np.asarray, init_params(cfg, seed=seed))
    rng = np.random.default_rng(seed)
    params["head"]["bias"] = np.array([1.5, -0.7, 0.4], np.float32)
    params["head"]["kernel"] = rng.normal(0, 0.3, params["head"]["kernel"].shape).astype(np.float32)
    if lora_rank:
        for block in ("h0", "h1"):
            for scope, layer in (("attn", "c_attn"), ("mlp", "c_fc")):
                node = params[block][scope][layer]
                node["lora_b"] = rng.normal(0, 0.2, node["lora_b"].shape).astype(np.float32)
    spec = ClassifierConfig(model=cfg, labels=LABELS, pool=pool, max_length=24, truncate=truncate)
    save_classifier(root, params, spec, bpe_dir=bpe_dir)
    return root


def _pipeline_probs(out, texts, **kwargs):
    clf = transformers.pipeline("text-classification", model=str(out), top_k=None, device="cpu")
    results = clf(texts, truncation=True, **kwargs)
    return np.array(
        [[{r["label"]: r["score"] for r in res}[name] for name in LABELS] for res in results]
    )


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_exported_classifier_gives_our_probabilities_in_transformers(tmp_path, lora_rank, bpe_dir):
    run = _classifier_run(tmp_path / "run", bpe_dir, lora_rank=lora_rank)
    out = export_classifier(run, tmp_path / "hf")
    texts = MESSAGES + [
        "a text long enough to be cut at the classifier's twenty-four tokens, "
        "which is what the training saw and what truncation=True does too"
    ]
    ours = Classifier.load(run).predict(texts)
    assert ours.truncated[-1] and not ours.truncated[:-1].any()
    np.testing.assert_allclose(_pipeline_probs(out, texts), ours.probs, atol=1e-4, rtol=0)
    # batched with padding: transformers finds the last real token itself
    np.testing.assert_allclose(
        _pipeline_probs(out, texts, batch_size=4), ours.probs, atol=1e-4, rtol=0
    )
    model = transformers.GPT2ForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.pad_token_id == 50256
    # the head's bias matters here, so an export without the fold would fail above
    spec_params = Classifier.load(run)
    no_bias = jax.tree.map(lambda x: x, spec_params.params)
    no_bias["head"]["bias"] = jnp.zeros_like(no_bias["head"]["bias"])
    without = Classifier(spec_params.spec, no_bias, spec_params.tokenizer).predict_proba(texts)
    assert np.abs(without - ours.probs).max() > 1e-2


def _modes(folder):
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}


def test_exported_files_have_an_ordinary_files_mode(tmp_path, hf_from_tf, bpe_dir):
    """Every file of an export readable like its neighbours (safetensors alone wrote
    model.safetensors 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    ordinary = 0o666 & ~umask
    out = export_classifier(_classifier_run(tmp_path / "run", bpe_dir), tmp_path / "hf")
    for folder in (out, hf_from_tf):
        modes = _modes(folder)
        assert "model.safetensors" in modes and "config.json" in modes
        assert modes == dict.fromkeys(modes, ordinary), folder


def test_a_tail_classifier_exports_cutting_the_same_side(tmp_path, bpe_dir):
    run = _classifier_run(tmp_path / "run", bpe_dir, truncate="tail")
    out = export_classifier(run, tmp_path / "hf")
    assert json.loads((out / "tokenizer_config.json").read_text())["truncation_side"] == "left"
    texts = [
        MESSAGES[0] + " and then a long tail of words that runs well past the "
        "classifier's twenty-four tokens, so that only its end is read"
    ]
    ours = Classifier.load(run).predict(texts)
    assert ours.truncated.all()
    np.testing.assert_allclose(_pipeline_probs(out, texts), ours.probs, atol=1e-4, rtol=0)
    both = _classifier_run(tmp_path / "both", bpe_dir, truncate="head+tail")
    with pytest.raises(ExportError, match=r"--truncate head\+tail"):
        export_classifier(both, tmp_path / "hf-both")


def _run_without_bpe_files(root, bpe_dir):
    run = _classifier_run(root, bpe_dir)
    for name in ("encoder.json", "vocab.bpe"):
        (run / name).unlink()
    return run


def test_export_of_a_run_without_bpe_files_and_no_cache(tmp_path, monkeypatch, bpe_dir):
    run = _run_without_bpe_files(tmp_path / "run", bpe_dir)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(ExportError, match="no encoder.json \\+ vocab.bpe and tiktoken's cache"):
        export_classifier(run, tmp_path / "hf")


@needs_real_bpe  # tiktoken's cache is checked against the real files' SHA-256
def test_export_of_a_run_without_bpe_files_uses_tiktokens_cache(tmp_path, monkeypatch, bpe_dir):
    run = _run_without_bpe_files(tmp_path / "run", bpe_dir)
    cache = tmp_path / "tiktoken"  # GPT-2's files as tiktoken caches them: used instead
    cache.mkdir()
    import hashlib

    from gpt2_jax.data.tokenizer import TIKTOKEN_GPT2_URL

    for name in ("encoder.json", "vocab.bpe"):
        key = hashlib.sha1(f"{TIKTOKEN_GPT2_URL}/{name}".encode()).hexdigest()
        shutil.copyfile(bpe_dir / name, cache / key)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    out = export_classifier(run, tmp_path / "hf2")
    assert (out / "vocab.json").read_bytes() == (bpe_dir / "encoder.json").read_bytes()


@pytest.mark.parametrize(
    "pool, why", [("last", "--pool last-real"), ("mean", "'mean'"), ("first", "'first'")]
)
def test_pools_transformers_cannot_read_are_refused(tmp_path, pool, why, bpe_dir):
    run = _classifier_run(tmp_path / "run", bpe_dir, pool=pool)
    with pytest.raises(ExportError, match=why):
        export_classifier(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_head_bias_fold_is_exact_and_refuses_a_rank_deficient_head():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(32, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    ln_bias = rng.normal(size=32).astype(np.float32)
    folded, error = fold_head_bias(kernel, bias, ln_bias)
    x = rng.normal(size=(5, 32))
    np.testing.assert_allclose((x + folded) @ kernel, (x + ln_bias) @ kernel + bias, atol=1e-5)
    assert error < 1e-5
    kernel[:, 2] = kernel[:, 0] * 2  # two classes read the same direction
    with pytest.raises(ExportError, match="rank 2 < 3 classes"):
        fold_head_bias(kernel, bias, ln_bias)


def test_export_command_converts_a_tf_checkpoint_that_transformers_loads(
    tiny_model_dir, tmp_path, capsys
):
    from gpt2_jax.commands import export

    out = tmp_path / "converted"
    assert export.main(["--model-dir", str(tiny_model_dir), "--to", "hf", str(out)]) == 0
    assert "--model-dir" in capsys.readouterr().out
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    settings, params = load_gpt2(tiny_model_dir)
    ids = get_tokenizer(out).encode(MESSAGES[0])
    ours = GPTModel(GPTConfig.from_settings(settings)).apply(
        {"params": load_weights(params)}, jnp.asarray([ids])
    )
    with torch.no_grad():
        theirs = hf_model(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)
    capsys.readouterr()  # transformers' progress bars
    # a second conversion into the same folder: one line, exit 1, nothing overwritten
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert export.main(["--model-dir", str(tiny_model_dir), "--to", "hf", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an empty folder" in err and err.count("\n") == 1
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(SystemExit) as exit_:
        export.main(["--model-dir", str(tiny_model_dir), "--to", "tflite", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "unknown format" in capsys.readouterr().err


# --------------------------------------------------------------------------- the Hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_repo(hf_from_tf):
    files = {
        name: (hf_from_tf / name).read_bytes()
        for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt")
    }
    sharded = {k: v for k, v in files.items() if k != "model.safetensors"}
    sharded["sub/weights-1.safetensors"] = files["model.safetensors"]
    sharded["model.safetensors.index.json"] = json.dumps(
        {"weight_map": {"wte.weight": "sub/weights-1.safetensors"}}
    ).encode()
    no_config = {k: v for k, v in files.items() if k != "config.json"}
    return {
        "tester/tiny-gpt2": {"commit": COMMIT, "files": files},
        "tester/sharded": {"commit": COMMIT[::-1], "files": sharded},
        "tester/no-config": {"commit": COMMIT, "files": no_config},
    }


def test_hub_fetch_caches_and_works_offline(hub_repo, hf_from_tf, tmp_path):
    cache = tmp_path / "hub-cache"
    with serve_hub(hub_repo) as (endpoint, log):
        folder = fetch_hf_repo(
            "tester/tiny-gpt2", cache_dir=cache, endpoint=endpoint, offline=False
        )
        gets = sorted(p.rsplit("/", 1)[1] for m, p in log if m == "GET")
        assert gets == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
        assert COMMIT in str(folder)  # a snapshot of the commit the server named
        _same_params(load_pretrained(folder)[1], load_hf_gpt2(hf_from_tf)[1])

        log.clear()  # cache hit: the server is asked only whether the files changed
        assert (
            fetch_hf_repo("tester/tiny-gpt2", cache_dir=cache, endpoint=endpoint, offline=False)
            == folder
        )
        assert log and all(method == "HEAD" for method, _ in log)

        log.clear()  # pinned to the commit
        assert (
            fetch_hf_repo(
                "tester/tiny-gpt2",
                revision=COMMIT,
                cache_dir=cache,
                endpoint=endpoint,
                offline=False,
            )
            == folder
        )
        assert all(f"/resolve/{COMMIT}/" in path for _, path in log)

        log.clear()  # offline with the files cached: no request at all
        assert (
            fetch_hf_repo("tester/tiny-gpt2", cache_dir=cache, endpoint=endpoint, offline=True)
            == folder
        )
        assert log == []

        with pytest.raises(HubError, match="not in the Hugging Face cache, and offline mode"):
            fetch_hf_repo(
                "tester/tiny-gpt2", cache_dir=tmp_path / "empty", endpoint=endpoint, offline=True
            )
        assert log == []
        with pytest.raises(HubError, match="tester/tiny-gpt2@v9: no such revision"):
            fetch_hf_repo(
                "tester/tiny-gpt2",
                revision="v9",
                cache_dir=tmp_path / "c2",
                endpoint=endpoint,
                offline=False,
            )
        with pytest.raises(HubError, match="tester/nothing@main: no such repository"):
            fetch_hf_repo(
                "tester/nothing", cache_dir=tmp_path / "c3", endpoint=endpoint, offline=False
            )
        with pytest.raises(
            HubError, match="^tester/no-config@main: the repository has no config.json$"
        ):
            fetch_hf_repo(
                "tester/no-config", cache_dir=tmp_path / "c4", endpoint=endpoint, offline=False
            )

        # a sharded repo, fetched online, then read offline from the cache
        folder = fetch_hf_repo(
            "tester/sharded", cache_dir=tmp_path / "c5", endpoint=endpoint, offline=False
        )
        log.clear()
        assert (
            fetch_hf_repo(
                "tester/sharded", cache_dir=tmp_path / "c5", endpoint=endpoint, offline=True
            )
            == folder
        )
        assert log == []
        _same_params(load_pretrained(folder)[1], load_hf_gpt2(hf_from_tf)[1])
    # no answer from the endpoint (the library retries for ~25 s, so only the message is
    # checked here): not mistaken for offline mode
    from huggingface_hub.errors import LocalEntryNotFoundError

    from gpt2_jax.weights.hub import _why

    lost = LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
    assert "did not answer" in _why("r@main", "config.json", lost, False, "http://127.0.0.1:9")
    assert "offline mode" in _why("r@main", "config.json", lost, True, "http://127.0.0.1:9")


# --------------------------------------------------------------------------- training

NO_TF = "import sys; sys.modules['tensorflow'] = None; sys.argv[0] = 'finetune'; "


def _finetune_without_tf(args, env_extra=None):
    """``experiments.finetune`` in a process where ``import tensorflow`` fails."""
    env = {**os.environ, **(env_extra or {})}
    code = NO_TF + "from gpt2_jax.commands.finetune import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_training_from_hf_folder_needs_no_tensorflow_and_equals_the_tf_run(
    tiny_model_dir, hf_from_tf, hub_repo, tmp_path
):
    from synthetic import write_sms_file

    data = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=60, n_spam=20)
    common = [
        "--data-file",
        str(data),
        "--epochs",
        "1",
        "--train-size",
        "48",
        "--val-size",
        "16",
        "--test-size",
        "16",
        "--batch-size",
        "8",
        "--memory-budget-gib",
        "0.001",
        "--pool",
        "last-real",
    ]
    from gpt2_jax.commands import finetune

    assert (
        finetune.main(
            [*common, "--model-dir", str(tiny_model_dir), "--run-dir", str(tmp_path / "tf")]
        )
        == 0
    )
    done = _finetune_without_tf(
        [*common, "--model-dir", str(hf_from_tf), "--run-dir", str(tmp_path / "hf")]
    )
    assert done.returncode == 0, done.stderr
    tf_report = json.loads((tmp_path / "tf" / "metrics.json").read_text())
    hf_report = json.loads((tmp_path / "hf" / "metrics.json").read_text())

    def figures(report):  # everything but the clock
        return [{k: v for k, v in e.items() if not k.endswith("seconds")} for e in report["epochs"]]

    assert figures(hf_report) == figures(tf_report)  # same weights, same run
    assert len(figures(hf_report)) == 1 and "test" in figures(hf_report)[0]

    refused = _finetune_without_tf(
        [*common, "--model-dir", str(tiny_model_dir), "--run-dir", str(tmp_path / "tf2")]
    )
    assert refused.returncode == 1
    assert "needs tensorflow" in refused.stderr and "experiments.export" in refused.stderr

    # --hf-repo through the library's own endpoint setting, in a process of its own
    with serve_hub(hub_repo) as (endpoint, log):
        fetched = _finetune_without_tf(
            [
                *common,
                "--hf-repo",
                "tester/tiny-gpt2",
                "--hf-revision",
                COMMIT,
                "--epochs",
                "0",
                "--run-dir",
                str(tmp_path / "hub"),
            ],
            {"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp_path / "hub-cache")},
        )
    assert fetched.returncode == 0, fetched.stderr
    assert any(m == "GET" and p.endswith("model.safetensors") for m, p in log)
    report = json.loads((tmp_path / "hub" / "metrics.json").read_text())
    assert report["settings"] == TINY_SETTINGS
    assert report["backbone"]["hf_repo"] == "tester/tiny-gpt2"
    assert report["backbone"]["hf_commit"] == COMMIT  # what "main" was, for a rerun


def test_hub_flags_are_checked():
    from gpt2_jax.finetune.config import ModelConfig

    with pytest.raises(ValueError, match="give --hf-repo too"):
        ModelConfig(hf_revision="abc123")
    with pytest.raises(ValueError, match="--model-dir or --hf-repo, not both"):
        ModelConfig(hf_repo="a/b", model_dir="models/124M")
