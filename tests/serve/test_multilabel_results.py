"""The server's answer for a classifier of several labels per text: each text's set and
every label's probability, also through the micro-batcher's split of a joint call."""

import json

import numpy as np
import pytest

from gpt2_jax.classifier.classifier import Predictions
from gpt2_jax.serve.batcher import MicroBatcher
from gpt2_jax.serve.request_checks import BadRequest, Limits, parse_request, results

LABELS = ("sports", "politics")


def _predict(texts, rows):
    probs = np.array([[0.9, 0.7] if "both" in t else [0.2, 0.1] for t in texts], np.float32)
    sets = probs >= 0.5
    names = [tuple(n for n, on in zip(LABELS, row) if on) for row in sets]
    return Predictions(names, probs, np.zeros(len(texts), bool), LABELS, sets)


def test_results_hold_the_set_and_every_probability():
    got = results(_predict(["both of them", "neither"], 2))
    assert got[0]["labels"] == ["sports", "politics"] and got[0]["label"] == "sports, politics"
    assert got[1]["labels"] == [] and got[1]["label"] == "(no label)"
    assert got[0]["probs"] == {"sports": np.float32(0.9), "politics": np.float32(0.7)}


def test_the_batcher_keeps_each_requests_sets():
    batcher = MicroBatcher(_predict, max_batch=8, wait_ms=50)
    batcher.start()
    try:
        first, second = batcher.submit(["both", "neither"]), batcher.submit(["neither", "both"])
        a, b = first.result(timeout=30), second.result(timeout=30)
    finally:
        batcher.close()
    np.testing.assert_array_equal(a.sets, [[True, True], [False, False]])
    np.testing.assert_array_equal(b.sets, [[False, False], [True, True]])
    assert b.labels == [(), ("sports", "politics")]


def test_a_request_threshold_is_refused_for_label_sets():
    body = json.dumps({"texts": ["a"], "threshold": 0.5}).encode()
    assert parse_request(body, Limits(), labels=2) == (["a"], 0.5)
    with pytest.raises(BadRequest, match="one label per text") as err:
        parse_request(body, Limits(), labels=2, multi_label=True)
    assert err.value.status == 422
