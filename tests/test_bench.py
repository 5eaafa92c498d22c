"""``experiments.bench`` runs its variants end to end: a variant that fails is only a
"failed" cell in the table, so this checks that the cheap ones succeed on a tiny model."""

import json

from conftest import SMS_FILE, needs

from experiments import bench


@needs(SMS_FILE)
def test_the_benchmark_variants_run(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    argv = ["--model-dir", str(tiny_model_dir), "--data-file", str(SMS_FILE), "--out", str(out)]
    bench.main([*argv, "--epochs", "1", "--steps", "2", "--variants", "book", "real-f32"])
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"book", "real-f32"}, results
    for name, r in results["results"].items():
        assert "error" not in r, (name, r.get("error"))
        assert r["total_s"] > 0 and r["epoch_s"] > 0
    cached = results["results"]["real-f32"]
    assert not cached["extrapolated"] and 0 < cached["prefix_share"]
    assert 0 <= cached["final_test"]["accuracy"] <= 1
    assert "failed" not in (out / "results.md").read_text()
