"""The lab's small run, recorded before the training core was reshaped.

``python tests/lab_baseline.py`` (from the repository root) rewrites
``tests/baselines/lab_small_run.json`` with the metrics the current code gives; the
regression test (``test_lab_baseline.py``) runs the same configurations and compares.
The file was written by the code of commit a60ca7c, before the reshaped core (whose
configuration classes this script now uses to ask for the same runs).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
BASELINE = HERE / "baselines" / "lab_small_run.json"

# name -> (pool, SpeedConfig overrides); all on the real SMS file, the tiny checkpoint
VARIANTS = {
    "lab": ("last", {}),
    "last-real": ("last-real", {}),
    "uncached": ("last", {"prefix_cache": False, "pooled_only": False}),
}
NEW_KEYS = ("macro_f1", "per_class")  # metrics added after the baseline was recorded
SIZES = dict(train_size=160, val_size=40, test_size=40)
EPOCHS = 2
LR = 1e-3


def comparable(report: dict) -> dict:
    """What must not change: the data facts and every epoch's metrics (timings dropped)."""
    epochs = [
        {k: _old_metrics(v) for k, v in e.items() if not k.endswith("seconds")}
        for e in report["epochs"]
    ]
    return {
        "data": report["data"]["splits"],
        "batches": report["data"]["batches_per_epoch"],
        "class_weights": report["class_weights"],
        "parameters": report["parameters"],
        "epochs": epochs,
    }


def _old_metrics(value):
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in NEW_KEYS}
    return value


def record(model_dir: Path, sms_file: Path, root: Path) -> dict:
    from gpt2_jax.finetune.config import (
        DataConfig,
        ModelConfig,
        OutputConfig,
        RunConfig,
        SpeedConfig,
    )
    from gpt2_jax.finetune.run import run
    from gpt2_jax.training.config import TrainConfig

    out = {}
    for name, (pool, speed) in VARIANTS.items():
        cfg = RunConfig(
            model=ModelConfig(model_dir=str(model_dir), pool=pool),
            data=DataConfig(data_file=str(sms_file), **SIZES),
            train=TrainConfig(epochs=EPOCHS, lr=LR),
            speed=SpeedConfig(**speed),
            output=OutputConfig(run_dir=str(root / name), keep_checkpoints=1),
        )
        out[name] = comparable(run(cfg, log=lambda s: None))
    return out


if __name__ == "__main__":
    from conftest import BPE_DIR, SMS_FILE, TINY_SETTINGS

    from gpt2_jax.weights.synthetic import write_openai_model_dir

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_openai_model_dir(
            Path(tmp) / "tiny", TINY_SETTINGS, seed=1, bpe_dir=BPE_DIR
        )
        result = record(model_dir, SMS_FILE, Path(tmp) / "runs")
    BASELINE.parent.mkdir(exist_ok=True)
    BASELINE.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {BASELINE}")
