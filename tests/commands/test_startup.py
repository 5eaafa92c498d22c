"""Start-up: ``import gpt2_jax`` loads nothing heavy, and ``classify`` never loads the
training stack."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

import gpt2_jax
from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params

TRAINING_STACK = ("optax", "tensorflow")  # orbax reads a classifier's weights too
CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=2, num_classes=2
)


def python(code: str, env: dict | None = None) -> str:
    """``code`` run by a fresh interpreter; its stdout."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env or dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def loaded(names) -> str:
    """Code that prints which top-level packages of ``names`` are in sys.modules."""
    return f"import sys, json; print(json.dumps([n for n in {list(names)!r} if n in sys.modules]))"


def test_import_gpt2_jax_loads_no_framework():
    heavy = (*TRAINING_STACK, "orbax", "jax", "flax", "pandas")
    assert json.loads(python("import gpt2_jax\n" + loaded(heavy))) == []


def test_every_public_name_resolves_to_its_definition():
    code = (
        "import gpt2_jax, json\n"
        "print(json.dumps({n: getattr(gpt2_jax, n).__module__ if hasattr(getattr(gpt2_jax, n), "
        "'__module__') else None for n in gpt2_jax.__all__}))"
    )
    modules = json.loads(python(code))
    assert sorted(modules) == sorted(gpt2_jax.__all__)
    assert set(gpt2_jax.__all__) <= set(dir(gpt2_jax))
    for name, module in modules.items():
        assert module is None or module.startswith("gpt2_jax."), (name, module)
    from gpt2_jax.classifier.classifier import Classifier
    from gpt2_jax.finetune.run import run

    assert gpt2_jax.Classifier is Classifier and gpt2_jax.run is run
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        gpt2_jax.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bpe_dir):
    spec = ClassifierConfig(model=CFG, labels=("ham", "spam"), pool="last-real", max_length=40)
    root = tmp_path_factory.mktemp("startup")
    return save_classifier(root / "run", init_params(CFG, seed=3), spec, bpe_dir=bpe_dir).parent


def test_classify_loads_no_training_stack(run_dir):
    code = (
        "from gpt2_jax.commands import classify\n"
        f"assert classify.main(['--run', {str(run_dir)!r}, 'win a prize']) == 0\n"
        + loaded(TRAINING_STACK)
    )
    out = python(code).strip().splitlines()
    assert out[1].startswith(("ham\t", "spam\t"))  # it classified
    assert json.loads(out[-1]) == []
