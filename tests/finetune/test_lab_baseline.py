"""Regression: the lab's small run gives the metrics recorded before the core was reshaped.

The baseline (``baselines/lab_small_run.json``) was written by ``lab_baseline.py`` with
the code of commit a60ca7c. Losses must agree to 1e-5 (relative); predictions may
differ by at most one message per split and epoch, since XLA's float32 reductions
differ slightly between CPU models (the file was recorded on one of them). On the
machine that recorded it the comparison is exact.
"""

import json
import math

import pytest
from conftest import BPE_DIR, SMS_FILE, needs
from lab_baseline import BASELINE, record

pytestmark = [pytest.mark.slow, needs(BPE_DIR), needs(SMS_FILE)]


def _close(a, b, path):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and path.endswith("confusion"):
        flips = sum(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)) / 2
        assert flips <= 1, f"{path}: {a} vs baseline {b}"
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}/{i}")
    elif isinstance(a, float):
        if math.isnan(b):
            assert math.isnan(a), path
        elif "loss" in path or path.endswith("class_weights"):
            assert a == pytest.approx(b, rel=1e-5), path
        else:  # ratios of counts: one flipped prediction at most
            assert a == pytest.approx(b, abs=0.2), path
    else:
        assert a == b, path


def test_lab_small_run_unchanged(tiny_model_dir, tmp_path):
    baseline = json.loads(BASELINE.read_text())
    now = record(tiny_model_dir, SMS_FILE, tmp_path)
    assert now.keys() == baseline.keys()
    for name in baseline:
        _close(now[name], baseline[name], name)
