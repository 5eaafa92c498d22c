"""The server's warm-up compiles every program its batched calls can need: after it,
calls of any size up to ``max_batch`` with texts of any length (repeats included)
compile nothing, for packed rows, full-width rows and chunked documents."""

import contextlib

import jax
import numpy as np
import pytest

from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig, Predictions
from gpt2_jax.classifier.warm_shapes import call_shapes, counts, texts_of_lengths, warm_calls
from gpt2_jax.data.chunks import Chunking
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params
from gpt2_jax.serve.batcher import MicroBatcher, batch_rows
from gpt2_jax.serve.server import warm_up

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch
CFG = GPTConfig(
    vocab_size=50257, context_length=96, emb_dim=16, n_heads=2, n_layers=2, num_classes=2
)
WORDS = "call now to claim your free prize reply stop ok see you at home later".split()


@contextlib.contextmanager
def counted_compiles():
    """A list that grows by one name per XLA compilation inside the block."""
    names: list[str] = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def traffic(rng, most: int, longest: int, calls: int):
    """Requests of 1 .. ``most`` texts (one of more, split by the batcher), of 1 ..
    ``longest`` words, some repeated within a request."""
    for i in range(calls):
        n = most + 3 if i == 0 else int(rng.integers(1, most + 1))
        texts = [" ".join(rng.choice(WORDS, int(rng.integers(1, longest + 1)))) for _ in range(n)]
        repeats = rng.integers(0, n, n // 3)
        for k in repeats:  # repeats are computed once: fewer distinct texts, same batch size
            texts[int(k)] = texts[0]
        yield texts


def _classifier(bpe_dir, **spec):
    params = init_params(CFG, seed=2)
    return Classifier(ClassifierConfig(CFG, ("a", "b"), **spec), params, get_tokenizer(bpe_dir))


@pytest.mark.parametrize(
    "max_batch,spec",
    [
        (8, {"pool": "last-real", "max_length": 66}),  # packed; 8 rows of 64 fill a batch
        (4, {"pool": "last", "max_length": 40}),  # full-width rows
        (8, {"pool": "mean", "max_length": 32, "chunking": Chunking(32, 24, "mean", 12)}),
    ],
    ids=["packed", "last", "chunked"],
)
def test_after_the_warm_up_no_call_compiles(bpe_dir, max_batch, spec):
    classifier = _classifier(bpe_dir, **spec)
    warm_up(classifier, max_batch)
    c = classifier.spec.chunking
    longest = classifier.spec.max_length + 4 if c is None else c.covered + 30
    rng = np.random.default_rng(0)
    with MicroBatcher(
        lambda texts, rows: classifier.predict(texts, batch_size=rows),
        max_batch=max_batch,
        wait_ms=0,
    ) as batcher, counted_compiles() as compiled:  # fmt: skip
        for texts in traffic(rng, max_batch, longest, 30):
            assert len(batcher.predict(texts, timeout=120).labels) == len(texts)
    assert compiled == [], sorted(set(compiled))


@pytest.mark.parametrize(
    "spec",
    [
        {"pool": "last-real", "max_length": 1024},
        {"pool": "mean", "max_length": 130},
        {"pool": "first", "max_length": 100},
        {"pool": "last-real", "max_length": 64, "chunking": Chunking(64, 48, "max", 16)},
    ],
)
def test_the_warm_shapes_hold_every_calls_shapes(spec):
    """Planned, not run: the shapes of random calls of up to 32 texts (lengths spread,
    clustered at the row widths, repeats) are among the warm-up's."""
    cfg = GPTConfig(vocab_size=50257, context_length=1024, emb_dim=8, n_heads=2, n_layers=1,
                    num_classes=2)  # fmt: skip
    s = ClassifierConfig(cfg, ("a", "b"), **spec)
    sizes = {n: batch_rows(n, 32) for n in range(1, 33)}
    _, shapes = warm_calls(s, sizes)
    top = s.max_length + 10 if s.chunking is None else s.chunking.covered + 10
    marks = [1, 2, 31, 33, 63, 64, 65, 127, 128, 129, top // 2, top // 2 + 1, top - 1, top]
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 33))
        distinct = int(rng.integers(1, n + 1))
        lengths = (
            rng.integers(1, top + 1, distinct)
            if rng.random() < 0.5
            else rng.choice([m for m in marks if 0 < m <= top], distinct)
        )
        assert call_shapes(s, lengths.tolist(), sizes[n]) <= shapes, (n, sorted(lengths))


def test_the_warm_up_texts_are_distinct_and_of_the_asked_lengths(bpe_dir):
    tokenizer = get_tokenizer(bpe_dir)
    texts = texts_of_lengths(tokenizer, [1, 1, 1, 5, 40], 50257)
    assert len(set(texts)) == 5
    assert [len(tokenizer.encode(t)) for t in texts] == [1, 1, 1, 5, 40]


def test_a_request_of_more_than_max_batch_texts_runs_as_calls_of_max_batch():
    sizes = []

    def classify(texts, rows):
        sizes.append((len(texts), rows))
        probs = np.array([[len(t), 1.0] for t in texts]) / 100
        sets = probs > 0.05
        return Predictions([t.upper() for t in texts], probs, probs[:, 0] > 0.05, ("a", "b"), sets)

    texts = ["x" * k for k in range(1, 12)]
    with MicroBatcher(classify, max_batch=4, wait_ms=0) as batcher:
        pred = batcher.predict(texts, timeout=60)
        assert batcher.stats.calls == 3 and batcher.stats.largest == 4
    assert sizes == [(4, 4), (4, 4), (3, 4)]
    assert pred.labels == [t.upper() for t in texts]
    np.testing.assert_array_equal(pred.probs[:, 0], np.arange(1, 12) / 100)
    assert pred.truncated.tolist() == [k > 5 for k in range(1, 12)]
    assert pred.sets.shape == (11, 2) and pred.sets[:, 0].tolist() == pred.truncated.tolist()


@pytest.mark.parametrize(
    "spec",
    [
        {"pool": "last-real", "max_length": 66},
        {"pool": "mean", "max_length": 200},
        {"pool": "last", "max_length": 40},
        {"pool": "mean", "max_length": 32, "chunking": Chunking(32, 24, "mean", 12)},
        {"pool": "last-real", "max_length": 16, "chunking": Chunking(16, 8, "max", 4)},
    ],
    ids=["packed-66", "packed-200", "last", "chunked-mean", "chunked-max"],
)
def test_the_sampled_counts_find_every_shape_of_the_exhaustive_plan(spec):
    """The planner tries only some text counts (``counts``); every count up to 48 gives no
    shape it misses."""
    cfg = GPTConfig(vocab_size=50257, context_length=1024, emb_dim=8, n_heads=2, n_layers=1,
                    num_classes=2)  # fmt: skip
    s = ClassifierConfig(cfg, ("a", "b"), **spec)
    sizes = {n: batch_rows(n, 48) for n in range(1, 49)}
    _, sampled = warm_calls(s, sizes)
    _, every = warm_calls(s, sizes, exhaustive=True)
    assert sampled == every
    assert counts(48) != counts(48, exhaustive=True)  # the sample is a sample
