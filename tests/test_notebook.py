from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "explore_params.ipynb"


@pytest.mark.slow
def test_explore_params_notebook_runs(tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2_JAX_MODEL_DIR", str(tiny_model_dir))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "n_embd   -> emb_dim         = 32" in text
    # 50257*32 + 64*32 + 2*(12*32*32 + 13*32) + 2*32, the tiny model's count
    assert "total: 1,635,744" in text
    assert "blocks/0/attn/c_attn/w       -> h0/attn/c_attn/kernel" in text
