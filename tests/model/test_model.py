"""The Flax model against two independent implementations of GPT-2."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.generate import generate
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.weights.openai import load_gpt2, load_weights

ATOL = 1e-4


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    settings, params = load_gpt2(tiny_model_dir)
    cfg = GPTConfig.from_settings(settings)
    return cfg, params, load_weights(params)


@pytest.fixture(scope="module")
def flax_logits(loaded):
    cfg, _, tree = loaded
    model = GPTModel(cfg)
    return jax.jit(lambda ids: model.apply({"params": tree}, ids))


def _inputs(cfg, seed=0, batch=3, length=None, pad_to=None):
    """Random token ids; rows right-padded with 50256 to ``pad_to`` at random lengths."""
    rng = np.random.default_rng(seed)
    length = length or cfg.context_length
    ids = rng.integers(0, cfg.vocab_size, (batch, length)).astype(np.int32)
    if pad_to:
        for row, n in zip(ids, rng.integers(1, length, batch)):
            row[n:] = 50256
    return ids


# ---- (a) a plain NumPy forward pass, written from the architecture, on the lab's dict ----
def _np_layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def _np_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _np_gpt2(params, ids, n_head):
    x = (params["wte"][ids] + params["wpe"][: ids.shape[1]]).astype(np.float64)
    t = ids.shape[1]
    for blk in params["blocks"]:
        h = _np_layer_norm(x, blk["ln_1"]["g"], blk["ln_1"]["b"])
        qkv = h @ blk["attn"]["c_attn"]["w"] + blk["attn"]["c_attn"]["b"]
        heads = []
        for q, k, v in zip(*(np.split(m, n_head, axis=-1) for m in np.split(qkv, 3, axis=-1))):
            s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
            s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
            w = np.exp(s - s.max(-1, keepdims=True))
            heads.append((w / w.sum(-1, keepdims=True)) @ v)
        x = x + np.concatenate(heads, -1) @ blk["attn"]["c_proj"]["w"] + blk["attn"]["c_proj"]["b"]
        h = _np_layer_norm(x, blk["ln_2"]["g"], blk["ln_2"]["b"])
        h = _np_gelu(h @ blk["mlp"]["c_fc"]["w"] + blk["mlp"]["c_fc"]["b"])
        x = x + h @ blk["mlp"]["c_proj"]["w"] + blk["mlp"]["c_proj"]["b"]
    return _np_layer_norm(x, params["g"], params["b"]) @ params["wte"].T


@pytest.mark.parametrize("pad", [False, True])
def test_matches_numpy_reference(loaded, flax_logits, pad):
    cfg, params, _ = loaded
    ids = _inputs(cfg, seed=int(pad), length=24, pad_to=24 if pad else None)
    ours = np.asarray(flax_logits(ids))
    ref = _np_gpt2(params, ids, cfg.n_heads)
    assert ours.shape == (3, 24, cfg.vocab_size)
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


# ---- (b) Hugging Face transformers' GPT2LMHeadModel, built locally, same weights ----
@pytest.mark.parametrize("pad", [False, True])
def test_matches_hugging_face(loaded, flax_logits, pad):
    cfg, params, _ = loaded
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from gpt2_jax.weights.hf_torch import hf_lm

    model = hf_lm(cfg, params)
    ids = _inputs(cfg, seed=10 + int(pad), batch=4, pad_to=cfg.context_length if pad else None)
    with torch.no_grad():
        ref = model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    ours = np.asarray(flax_logits(ids))
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


def test_causal(loaded, flax_logits):
    cfg, _, _ = loaded
    ids = _inputs(cfg, seed=3, batch=2, length=32)
    changed = ids.copy()
    changed[:, 20:] = (changed[:, 20:] + 7) % cfg.vocab_size
    a, b = np.asarray(flax_logits(ids)), np.asarray(flax_logits(changed))
    np.testing.assert_array_equal(a[:, :20], b[:, :20])
    assert np.abs(a[:, 20:] - b[:, 20:]).max() > 1e-3  # the change is visible after t


def test_dropout_only_when_not_deterministic():
    cfg = GPTConfig(
        vocab_size=100, context_length=16, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.5
    )
    params = init_params(cfg)
    ids = jnp.arange(8)[None] % 100
    model = GPTModel(cfg)
    det = model.apply({"params": params}, ids)
    np.testing.assert_array_equal(det, model.apply({"params": params}, ids))
    r1 = model.apply(
        {"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)}
    )
    r2 = model.apply(
        {"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)}
    )
    assert not np.allclose(r1, det) and not np.allclose(r1, r2)


def test_too_long_input_is_rejected(loaded):
    cfg, _, tree = loaded
    with pytest.raises(ValueError, match="exceeds the model's context_length 64"):
        GPTModel(cfg).apply({"params": tree}, np.zeros((1, 65), np.int32))


def test_greedy_generation_matches_step_by_step_argmax(loaded, flax_logits):
    cfg, _, tree = loaded
    prompt = np.array([464, 3290, 318], np.int32)  # any ids
    out = generate(GPTModel(cfg), tree, prompt, max_new_tokens=5)
    assert out.shape == (8,) and (out[:3] == prompt).all()
    ids = prompt
    for _ in range(5):  # the obvious, recompiling way
        ids = np.append(ids, np.argmax(np.asarray(flax_logits(ids[None]))[0, -1]))
    np.testing.assert_array_equal(out, ids)
