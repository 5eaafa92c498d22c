"""What the served page shows about a run: its labels, pooling, model size, the test
figures of the saved epoch (``metrics.json``) and a few example texts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gpt2_jax.finetune.examples import read_examples
from gpt2_jax.finetune.record import RunRecord

EXAMPLES = (
    "WINNER!! You have been selected to receive a £900 prize reward! To claim call "
    "09061701461 now. Claim code KL341. Valid 12 hours only.",
    "URGENT! Your mobile number has won a free trip to Spain. Text WIN to 80086 to claim.",
    "Hey, are we still meeting for lunch tomorrow at 12?",
    "Sorry I missed your call, I'll ring you back after work.",
    "Ok lar... Joking wif u oni...",
)


def run_facts(run_dir: str | Path, classifier) -> dict:
    """What the page shows about the run: labels, pooling, max length, model size and,
    from ``metrics.json`` if the run has one, test accuracy and per-class recall of the
    epoch whose weights were saved."""
    spec = classifier.spec
    m = spec.model
    n_params = int(sum(int(np.prod(np.shape(x))) for x in _leaves(classifier.params)))
    facts = {
        "run": Path(run_dir).resolve().name,
        "labels": list(spec.labels),
        "pool": spec.pool,
        "max_length": spec.max_length,
        "truncate": spec.truncate,
        "threshold": spec.threshold,  # two classes: the second when its probability >= this
        "temperature": spec.temperature,
        "model": {
            "parameters": n_params,
            "n_layers": m.n_layers,
            "n_heads": m.n_heads,
            "emb_dim": m.emb_dim,
            "context_length": m.context_length,
            "vocab_size": m.vocab_size,
        },
    }
    facts["metrics"], facts["metrics_note"] = saved_metrics(
        Path(run_dir) / "metrics.json", spec.labels
    )
    facts["examples"] = page_examples(run_dir, spec.labels)
    return facts


def page_examples(run_dir: str | Path, labels) -> list[str]:
    """The run's own validation texts (``examples.json``); a run saved before they were
    kept shows the SMS examples if it is a spam/ham classifier, else none."""
    texts = read_examples(run_dir)
    if texts is not None:
        return texts
    return list(EXAMPLES) if tuple(labels) == ("ham", "spam") else []


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def saved_metrics(path: Path, labels) -> tuple[dict | None, str]:
    """``(metrics, note)``: test accuracy, n and per-class recall of the saved epoch
    (``selected.epoch``, else the last with a test split), or ``None`` and why not.
    A missing or damaged file is a note, not an error: the classifier works without it."""
    if not path.is_file():
        return None, "no metrics.json in the run folder"
    try:
        return _saved_metrics(RunRecord.read(path), labels)
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as err:
        return None, f"metrics.json unreadable ({type(err).__name__})"


def _saved_metrics(report: RunRecord, labels) -> tuple[dict | None, str]:
    epochs = report.epochs
    chosen = report.selected.epoch if report.selected else None
    epoch = next((e for e in epochs if e.get("epoch") == chosen), None) if chosen else None
    if epoch is None or "test" not in epoch:
        epoch = next((e for e in reversed(epochs) if "test" in e), None)
    if epoch is None or not isinstance(epoch.get("test"), dict):
        return None, "metrics.json has no test results"
    test = epoch["test"]
    per_class = test.get("per_class") or {}
    recall = {
        name: _number(per_class.get(name, {}).get("recall", test.get(f"{name}_accuracy")))
        for name in labels
    }
    return (
        {
            "epoch": epoch.get("epoch"),
            "test_accuracy": _number(test.get("accuracy")),
            "test_n": test.get("n"),
            "recall": recall,
        },
        "test split of metrics.json",
    )


def _number(x):
    """A JSON-safe float (NaN, e.g. recall of a class without test examples -> None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
