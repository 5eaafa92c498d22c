"""``experiments.export --run ... --push-to-hub OWNER/NAME``: the exported folder and its
model card go up to a stand-in Hub on 127.0.0.1, and transformers loads the repo back
from there with the logits of the local folder."""

import json
import sys

import jax
import numpy as np
import pytest
from conftest import TINY_SETTINGS
from hub_server import serve_hub

from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier
from gpt2_jax.commands import export
from gpt2_jax.finetune.record import METRICS_FILE, RunRecord
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params
from gpt2_jax.util.machine import run_machine

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
hub = pytest.importorskip("huggingface_hub")

LABELS = ("ham", "spam")


def _figures(rng, n):
    return {"n": n, "loss": float(rng.uniform(0.1, 1)), "accuracy": float(rng.uniform(0.5, 1))}


@pytest.fixture
def run_dir(tmp_path, bpe_dir):
    """A saved classifier (random weights, a head bias that matters) with a run record."""
    cfg = GPTConfig.from_settings(TINY_SETTINGS, num_classes=len(LABELS))
    params = jax.tree.map(np.asarray, init_params(cfg, seed=3))
    params["head"]["bias"] = np.array([0.9, -0.6], np.float32)
    spec = ClassifierConfig(model=cfg, labels=LABELS, pool="last-real", max_length=16)
    root = tmp_path / "run"
    save_classifier(root, params, spec, bpe_dir=bpe_dir)
    rng = np.random.default_rng(7)
    epochs = [{"epoch": e, "val": _figures(rng, 8), "test": _figures(rng, 9)} for e in range(1, 3)]
    record = RunRecord(
        config={"train": {"lr": 0.0005, "epochs": 2}},
        data={"rows": 41, "classes": list(LABELS), "splits": {"train": {"n": 24, "ham": 18}}},
        backend="cpu",
        machine=run_machine(jax.devices()),
        epochs=epochs,
        status="finished",
    )
    (root / METRICS_FILE).write_text(json.dumps(record.to_dict()))
    return root


def _patch_endpoint(monkeypatch, endpoint):
    """transformers asks huggingface_hub, which read HF_ENDPOINT when it was imported."""
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        hub.constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )


def test_push_to_hub_uploads_a_folder_transformers_loads_back(
    run_dir, tmp_path, monkeypatch, capsys
):
    repos: dict = {}
    out = tmp_path / "hf"
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with serve_hub(repos) as (endpoint, log):
        _patch_endpoint(monkeypatch, endpoint)
        args = ["--run", str(run_dir), "--to", "hf", str(out), "--push-to-hub", "me/spam"]
        assert export.main([*args, "--private"]) == 0, capsys.readouterr().err
        assert repos["me/spam"]["private"] and repos["me/spam"]["authorization"].endswith(
            "hf_test_token"
        )
        pushed = repos["me/spam"]["files"]
        assert sorted(pushed) == sorted(p.name for p in out.iterdir())
        assert all(pushed[name] == (out / name).read_bytes() for name in pushed)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            "me/spam", cache_dir=tmp_path / "hub-cache"
        ).eval()
        assert ("GET", "/me/spam/resolve/main/model.safetensors") in log
    local = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = torch.tensor([[464, 3290, 318, 257, 1332, 13]])
    with torch.no_grad():
        np.testing.assert_array_equal(model(ids).logits.numpy(), local(ids).logits.numpy())
    assert model.config.id2label == dict(enumerate(LABELS))

    card = pushed["README.md"].decode()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    record = json.loads((run_dir / METRICS_FILE).read_text())
    last = record["epochs"][-1]
    for split in ("val", "test"):  # the last epoch's figures, as the run recorded them
        assert f"| {split} | {last[split]['n']} | {last[split]['accuracy']:.4f} |" in card
    note = json.loads((out / "gpt2_jax_export.json").read_text())
    assert f"{note['head_bias_fold_max_error']:.2e}" in card
    assert (
        "| 1 | spam |" in card
        and '"lr": 0.0005' in card
        and f"Trained with JAX on cpu: {record['machine']}." in card
    )


def test_push_failures_are_one_line(run_dir, tmp_path, monkeypatch, capsys):
    args = ["--run", str(run_dir), "--to", "hf", str(tmp_path / "a")]
    with pytest.raises(SystemExit):  # before anything is written
        export.main([*args, "--push-to-hub", "bad"])
    assert "--push-to-hub 'bad': name the repository as OWNER/NAME" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    with pytest.raises(SystemExit):
        export.main(["--model-dir", str(tmp_path), "--to", "hf", str(tmp_path / "b"), "--private"])
    assert "--push-to-hub and --private go with --run" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN", raising=False)  # and no saved login
    monkeypatch.setattr(hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with serve_hub({}) as (endpoint, log):
        _patch_endpoint(monkeypatch, endpoint)
        assert export.main([*args, "--push-to-hub", "me/spam"]) == 1
    assert ("POST", "/api/repos/create") in log  # refused there: nothing uploaded
    assert not any("/preupload/" in path or "/commit/" in path for _, path in log)
    err = capsys.readouterr().err
    assert err.startswith(f"error: --push-to-hub me/spam ({endpoint}): ")
    assert err.rstrip().endswith(
        "set HF_TOKEN to a token with write access (or run `hf auth login`)"
    )
    assert err.count("\n") == 1


def test_without_huggingface_hub_one_line_says_what_to_install(tmp_path, monkeypatch):
    from gpt2_jax.commands.hub_push import push_folder

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"^--push-to-hub needs huggingface_hub: pip install"):
        push_folder(tmp_path, "me/spam")


def test_a_classifier_without_a_run_record_exports_with_a_plain_card(run_dir, tmp_path, capsys):
    (run_dir / METRICS_FILE).unlink()  # as save_classifier alone leaves it
    assert export.main(["--run", str(run_dir), "--to", "hf", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "No run record could be read" in card and "| 1 | spam |" in card
    with pytest.raises(SystemExit):  # the card and the push go with the transformers folder
        export.main(
            ["--run", str(run_dir), "--to", "onnx", str(tmp_path / "o"), "--push-to-hub", "me/x"]
        )
    assert "use it with --to hf" in capsys.readouterr().err
