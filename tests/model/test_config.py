import jax
import pytest

from gpt2_jax.model.config import MODEL_SIZES, GPTConfig, settings_for_size
from gpt2_jax.model.gpt import param_shapes
from gpt2_jax.util.tree import count_params
from gpt2_jax.weights.openai import expected_shapes, load_weights, nest_variables


def test_from_settings_maps_openai_names_to_book_names():
    settings = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}
    cfg = GPTConfig.from_settings(settings, drop_rate=0.1)
    assert (cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_heads, cfg.n_layers) == (
        50257,
        1024,
        768,
        12,
        12,
    )
    assert cfg.drop_rate == 0.1 and cfg.qkv_bias is True
    assert cfg.to_settings() == settings


def test_from_settings_names_missing_key():
    with pytest.raises(KeyError, match="n_head"):
        GPTConfig.from_settings({"n_vocab": 1, "n_ctx": 1, "n_embd": 1, "n_layer": 1})


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(emb_dim=10, n_heads=3)
    with pytest.raises(ValueError, match="unknown GPT-2 model size"):
        settings_for_size("2B")


# Parameter counts with the head tied to wte, computed by hand from the sizes:
# V*E + T*E + L*(12*E*E + 13*E) + 2*E.
def _hand_count(s):
    e = s["n_embd"]
    return s["n_vocab"] * e + s["n_ctx"] * e + s["n_layer"] * (12 * e * e + 13 * e) + 2 * e


@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_full_size_shapes_without_weights(size):
    cfg = GPTConfig.from_size(size)
    shapes = param_shapes(cfg)
    assert count_params(shapes) == _hand_count(MODEL_SIZES[size])
    assert shapes[f"h{cfg.n_layers - 1}"]["attn"]["c_attn"]["kernel"].shape == (
        cfg.emb_dim,
        3 * cfg.emb_dim,
    )
    assert f"h{cfg.n_layers}" not in shapes

    # The checkpoint mapping produces exactly this tree structure and these shapes.
    settings = MODEL_SIZES[size]
    fake = nest_variables(
        {
            name: jax.ShapeDtypeStruct(shape, "float32")
            for name, shape in expected_shapes(settings).items()
        },
        settings["n_layer"],
    )
    mapped = load_weights(fake)
    assert jax.tree.structure(mapped) == jax.tree.structure(shapes)
    assert jax.tree.map(lambda a: a.shape, mapped) == jax.tree.map(lambda a: a.shape, shapes)


def test_124m_count_matches_the_lab():
    assert count_params(param_shapes(GPTConfig.from_size("124M"))) == 124_439_808


def test_classifier_head_replaces_tied_lm_head():
    shapes = param_shapes(GPTConfig.from_size("124M", num_classes=2))
    assert shapes["head"]["kernel"].shape == (768, 2)
    assert count_params(shapes) == 124_439_808 + 768 * 2 + 2


def test_memory_estimate():
    from gpt2_jax.training.memory import GIB, RUNTIME_BYTES, estimate_peak_bytes, memory_check

    s = settings_for_size("124M")
    weights = 4 * 124_439_808
    # the lab: 3,500 messages x 257 tokens x 768 floats of frozen-prefix outputs
    prefix = 4 * 3500 * 257 * 768
    assert estimate_peak_bytes(s, 3500, 257) == RUNTIME_BYTES + 2 * weights + prefix
    assert estimate_peak_bytes(s, 3500, 257, cache_prefix=False) == RUNTIME_BYTES + 2 * weights
    assert memory_check(s, 3500, 257, True).startswith("estimated peak memory 5.1 GiB")
    huge = dict(s, n_layer=4000)  # ~113 G parameters: more than any test machine has
    assert memory_check(huge, 10, 8, True).startswith("WARNING: estimated peak memory")
    assert GIB == 1 << 30
