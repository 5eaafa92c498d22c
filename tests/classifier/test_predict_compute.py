"""How predictions are computed, not what they are: bfloat16 matmuls
(``Classifier.with_dtype``, ``classify --dtype``) stay close to float32 on every path
(packed rows, full-width batches, chunked documents), and float32 stays the default."""

import numpy as np
import pytest

from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig
from gpt2_jax.commands import classify
from gpt2_jax.data.chunks import Chunking
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=2, num_classes=3
)
LABELS = ("billing", "bug", "praise")
LONG = " ".join(["the invoice for march was charged twice to my card"] * 8)  # > 40 tokens
TEXTS = [
    "thanks, love it",
    "the app crashes when I open settings",
    LONG,
    "why was I billed twice?",
    "ok",
    "my card was charged for an app I never opened, please refund",
    "thanks, love it",  # a repeat
]
# bfloat16 keeps 8 significant bits: each matmul input is rounded by up to 2^-9 (0.2 %);
# over two blocks and the head the logits move by about 1 % of their size (about 1 here),
# and a probability moves by at most a quarter of that (the softmax's slope).
BF16_ATOL = 2e-2
PATHS = {  # what each spec exercises
    "packed": {"pool": "last-real"},
    "full-width": {"pool": "last"},
    "documents": {"pool": "last-real", "max_length": 16, "chunking": Chunking(16, stride=12)},
}


def classifier(bpe_dir, **changes) -> Classifier:
    spec = ClassifierConfig(
        **{"model": CFG, "labels": LABELS, "pool": "last-real", "max_length": 40, **changes}
    )
    return Classifier(spec, init_params(CFG, seed=3), get_tokenizer(bpe_dir))


@pytest.mark.parametrize("path", PATHS)
def test_bfloat16_is_close_to_float32_which_stays_the_default(bpe_dir, path):
    plain = classifier(bpe_dir, **PATHS[path])
    default = plain.predict(TEXTS, batch_size=4)
    f32 = plain.with_dtype("float32").predict(TEXTS, batch_size=4)
    np.testing.assert_array_equal(default.probs, f32.probs)  # bit for bit
    bf16 = plain.with_dtype("bfloat16").predict(TEXTS, batch_size=4)
    assert plain.dtype == "float32"  # with_dtype made another classifier
    diff = np.abs(bf16.probs - f32.probs).max()
    assert 0 < diff < BF16_ATOL, diff  # computed in bfloat16, and close
    same = np.mean([a == b for a, b in zip(bf16.labels, f32.labels)])
    assert same >= 0.7, (bf16.labels, f32.labels)
    assert bf16.truncated.tolist() == f32.truncated.tolist()


def test_a_bad_dtype_is_one_line(bpe_dir, capsys):
    with pytest.raises(ValueError, match=r"^dtype must be one of float32, bfloat16, got 'f16'$"):
        classifier(bpe_dir).with_dtype("f16")
    with pytest.raises(SystemExit) as exit_info:
        classify.main(["--run", "x", "a", "--dtype", "float16"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--dtype: invalid choice: 'float16'" in err
