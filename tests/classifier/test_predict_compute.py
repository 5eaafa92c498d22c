"""How predictions are computed, not what they are: bfloat16 matmuls
(``Classifier.with_dtype``, ``classify --dtype``) stay close to float32 on every path
(packed rows, full-width batches, chunked documents), float32 stays the default, and a
mesh of two (fake CPU) devices (``Classifier.on_mesh``, ``classify --mesh data=2``) gives
one device's probabilities."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig, save_classifier
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


def test_cli_help_names_dtype_and_mesh():
    text = " ".join(classify.parser().format_help().split())
    assert "--dtype {float32,bfloat16}" in text and "--mesh data=N" in text
    assert "float32 accumulation" in text and "(AMX/AVX512-bf16)" in text


@pytest.mark.parametrize(
    "mesh, message",
    [
        ("fsdp=2", "classify splits rows over the data axis only; give data=N"),
        ("data=2,fsdp=1", "classify splits rows over the data axis only"),
        ("model=2", "--mesh 'model=2': expected data=N (N devices)"),
    ],
)
def test_cli_refuses_a_mesh_other_than_data(mesh, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        classify.main(["--run", "x", "a", "--mesh", mesh])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_mesh_of_one_device_changes_nothing(bpe_dir):
    from gpt2_jax.parallel.mesh import make_mesh

    one = make_mesh("data=1")
    plain = classifier(bpe_dir)
    assert plain.on_mesh(one) is plain  # one device: nothing changes
    chunked = classifier(bpe_dir, **PATHS["documents"])
    assert chunked.on_mesh(one) is chunked


# Run by a process with two CPU devices: probabilities on a data=2 mesh (API, packed and
# full-width; the CLI) against the same classifier on one device.
MESH_CODE = """
import json, sys
import numpy as np
from gpt2_jax.classifier.classifier import Classifier
from gpt2_jax.commands import classify
from gpt2_jax.parallel.mesh import make_mesh

from gpt2_jax.data.chunks import Chunking

run, out, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
texts += [t + " again" for t in texts]  # packed batches of 3 rows: rounded up to 4
plain = Classifier.load(run)
chunked = plain.spec.__class__(**{**plain.spec.__dict__, "chunking": Chunking(40, 20)})
mesh = make_mesh("data=2")
diffs = {}
for pool in ("last-real", "last"):
    one = plain if pool == "last-real" else plain.__class__(
        plain.spec.__class__(**{**plain.spec.__dict__, "pool": pool}), plain.params,
        plain.tokenizer)
    want = one.predict(texts, batch_size=3).probs
    on = one.on_mesh(mesh)
    assert len(on.params["head"]["kernel"].sharding.device_set) == 2
    diffs[pool] = float(np.abs(on.predict(texts, batch_size=3).probs - want).max())
assert classify.main(["--run", run, "--mesh", "data=2", "--output", out, *texts]) == 0
got = [json.loads(line) for line in open(out)]
want = plain.predict(texts).probs
diffs["cli"] = float(max(abs(r[f"p_{c}"] - w[k]) for r, w in zip(got, want)
                         for k, c in enumerate(plain.labels)))
for mesh, spec in [("fsdp=2", plain.spec), ("data=2", chunked)]:  # refused in one line
    try:
        Classifier(spec, plain.params, plain.tokenizer).on_mesh(make_mesh(mesh))
    except ValueError as err:
        diffs[mesh] = str(err)
print(json.dumps(diffs))
"""


def test_a_data_mesh_gives_one_devices_probabilities(bpe_dir, tmp_path):
    clf = classifier(bpe_dir)
    run = save_classifier(tmp_path / "run", clf.params, clf.spec, bpe_dir=bpe_dir).parent
    done = subprocess.run(
        [sys.executable, "-c", MESH_CODE, str(run), str(tmp_path / "out.jsonl"), json.dumps(TEXTS)],
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    diffs = json.loads(done.stdout.splitlines()[-1])
    assert diffs.pop("fsdp=2").endswith(
        "prediction splits rows over the data axis only, "
        "the weights whole on each device; use data=N"
    )
    assert diffs.pop("data=2").startswith("this classifier chunks long texts")
    assert sorted(diffs) == ["cli", "last", "last-real"]
    assert max(diffs.values()) <= 1e-5, diffs
