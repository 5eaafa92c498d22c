"""Start-up: ``import gpt2_jax`` loads nothing heavy, ``classify`` never loads the training
stack, and the commands keep compiled programs in a cache folder that the next process
reads (gpt2_jax.util.compile_cache), or in none when switched off."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import REPO

import gpt2_jax
from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params
from gpt2_jax.util.compile_cache import (
    CACHE_VAR,
    DAMAGED,
    _report_damaged_entries,
    compile_cache_root,
    use_compile_cache,
)

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


def test_classify_of_texts_loads_no_orbax_nor_pandas(run_dir):
    """The command's module, and classifying texts given as arguments: no orbax (the
    weights come from weights.bin), no pandas (tables are for --input and --output)."""
    heavy = ("orbax", "tensorstore", "pandas", "pyarrow", "transformers", *TRAINING_STACK)
    code = (
        "from gpt2_jax.commands import classify\n"
        + loaded(heavy)
        + f"\nassert classify.main(['--run', {str(run_dir)!r}, 'win a prize']) == 0\n"
        + loaded(heavy)
    )
    out = python(code).strip().splitlines()
    assert json.loads(out[0]) == [] and json.loads(out[-1]) == []
    assert out[2].startswith(("ham\t", "spam\t"))  # it classified


def classify(run_dir, tmp_path, *flags, **env):
    """``experiments.classify`` of one text in a fresh process, with XDG_CACHE_HOME in
    ``tmp_path`` and the cache settings of ``env`` only (None: unset)."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), CACHE_VAR: None, **env}
    full = {k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO), **env}.items() if v}
    full["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # however fast this CPU
    out = subprocess.run(
        [sys.executable, "-m", "experiments.classify", "--run", str(run_dir), *flags, "a text"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out


def entries(folder):
    """The compiled programs under ``folder``."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*-cache"))


@pytest.mark.slow
def test_cache_written_by_one_process_and_read_by_the_next(run_dir, tmp_path):
    folder = tmp_path / "xdg" / "gpt2_jax" / "jax"
    first = classify(run_dir, tmp_path)
    written = entries(folder)
    assert written and all(str(p).startswith("cpu-") for p in written)
    second = classify(run_dir, tmp_path, JAX_LOG_COMPILES="1")
    assert "Persistent compilation cache hit for '" in second.stderr  # the forward's programs
    assert second.stdout == first.stdout
    assert entries(folder) == written


@pytest.mark.slow
def test_a_damaged_cache_entry_is_one_line_that_says_what_to_do(run_dir, tmp_path):
    folder = tmp_path / "xdg" / "gpt2_jax" / "jax"
    first = classify(run_dir, tmp_path)
    for entry in entries(folder):  # as a disk that filled up might leave them
        (folder / entry).write_bytes(b"not a compressed program")
    second = classify(run_dir, tmp_path)
    assert second.stdout == first.stdout
    said = [line for line in second.stderr.splitlines() if "compilation cache" in line]
    assert len(said) == 1 and said[0].startswith("warning: compilation cache ")
    assert "delete the folder" in said[0] and "UserWarning" not in second.stderr


def test_the_damaged_entry_report_is_replaced_not_stacked(monkeypatch, capsys):
    original = warnings.showwarning
    monkeypatch.setattr(warnings, "showwarning", original)  # put back after the test
    _report_damaged_entries(Path("a"))
    _report_damaged_entries(Path("b"))  # another folder: replaces the first report
    assert warnings.showwarning._gpt2_jax_inner is original
    for name in ("f", "g"):
        warnings.showwarning(UserWarning(f"{DAMAGED} for {name!r}: bad"), UserWarning, "x", 1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: compilation cache b: ")


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, env",
    [
        (["--no-compile-cache"], {}),
        ([], {CACHE_VAR: "off"}),
        ([], {CACHE_VAR: "elsewhere"}),
    ],
)
def test_cache_moved_or_switched_off(run_dir, tmp_path, flags, env):
    if env.get(CACHE_VAR) == "elsewhere":
        env = {CACHE_VAR: str(tmp_path / "elsewhere")}
    classify(run_dir, tmp_path, *flags, **env)
    assert not (tmp_path / "xdg").exists()
    moved = tmp_path / "elsewhere"
    assert bool(entries(moved)) == (CACHE_VAR in env and env[CACHE_VAR] != "off")


def test_cache_folder_from_the_environment(tmp_path):
    home = os.path.expanduser("~")
    assert compile_cache_root({}) == compile_cache_root({"XDG_CACHE_HOME": f"{home}/.cache"})
    assert str(compile_cache_root({})).startswith(home)
    assert compile_cache_root({"XDG_CACHE_HOME": "/x"}).as_posix() == "/x/gpt2_jax/jax"
    assert compile_cache_root({CACHE_VAR: "~/c", "XDG_CACHE_HOME": "/x"}).as_posix() == (
        f"{home}/c"
    )
    for off in ("off", "OFF", "0", "false", "no"):
        assert compile_cache_root({CACHE_VAR: off}) is None


def test_a_folder_that_cannot_be_made_is_one_warning(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(CACHE_VAR, str(tmp_path / "file" / "cache"))
    assert use_compile_cache() is None
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("warning: compilation cache")
    assert CACHE_VAR in err
