"""A classifier of several labels per text: what ``ClassifierConfig`` adds for it
(``multi_label``, per-label ``thresholds``), checked, saved in ``classifier.json``
(format 3: ``"problem_type": "multi_label_classification"``, ``"thresholds"``) and
applied: a sigmoid per label, and label k in a text's set when its probability reaches
``thresholds[k]`` (0.5 where none were saved)."""

from __future__ import annotations

import math

import numpy as np

PROBLEM_TYPE = "multi_label_classification"  # transformers' name, in classifier.json too
DEFAULT_THRESHOLD = 0.5


def check_label_sets(spec) -> None:
    """Refuse, in one line, multi-label settings a ``ClassifierConfig`` cannot hold."""
    if not isinstance(spec.multi_label, bool):
        raise ValueError(f"ClassifierConfig.multi_label must be a bool, got {spec.multi_label!r}")
    if spec.multi_label and (spec.temperature != 1.0 or spec.threshold is not None):
        raise ValueError(
            "ClassifierConfig: a temperature and a threshold are for one label per text; "
            "a multi_label classifier decides by its per-label thresholds"
        )
    if spec.multi_label and spec.chunking is not None:
        raise ValueError(
            "ClassifierConfig: chunking (--long-texts chunk) combines chunks for one label "
            "per text; it cannot be used with multi_label"
        )
    if spec.thresholds is None:
        return
    if not spec.multi_label:
        raise ValueError(
            "ClassifierConfig.thresholds are for several labels per text (multi_label)"
        )
    values = tuple(spec.thresholds) if isinstance(spec.thresholds, (list, tuple)) else None
    if (
        values is None
        or len(values) != len(spec.labels)
        or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in values
        )
    ):
        raise ValueError(
            f"ClassifierConfig.thresholds must be one probability in [0, 1] per label "
            f"({len(spec.labels)}), got {spec.thresholds!r}"
        )
    object.__setattr__(spec, "thresholds", tuple(float(t) for t in values))


def thresholds_of(spec) -> np.ndarray:
    """``[K]`` each label's threshold (0.5 where none were saved)."""
    if spec.thresholds is None:
        return np.full(len(spec.labels), DEFAULT_THRESHOLD)
    return np.asarray(spec.thresholds, np.float64)


def decide_sets(spec, probs: np.ndarray) -> np.ndarray:
    """``[N, K]`` bool: each text's label set from its label probabilities ``[N, K]``."""
    return np.asarray(probs) >= thresholds_of(spec)


def sets_dict(spec) -> dict:
    """What ``classifier.json`` adds for several labels per text."""
    return {"problem_type": PROBLEM_TYPE, "thresholds": thresholds_of(spec).tolist()}


def sets_from_dict(d: dict) -> dict:
    """The ``ClassifierConfig`` fields read back from ``classifier.json`` (none for one
    label per text, as every file before format 3)."""
    kind = d.get("problem_type", "single_label_classification")
    if kind == "single_label_classification":
        return {}
    if kind != PROBLEM_TYPE:
        raise ValueError(
            f"key 'problem_type' is {kind!r}; this version reads "
            f"single_label_classification and {PROBLEM_TYPE}"
        )
    thresholds = d.get("thresholds")
    if thresholds is not None and not isinstance(thresholds, list):
        raise ValueError(f"key 'thresholds' must be a list of probabilities, got {thresholds!r}")
    if thresholds is not None and any(
        not isinstance(t, (int, float)) or not math.isfinite(t) for t in thresholds
    ):
        raise ValueError(f"key 'thresholds' must hold numbers, got {thresholds!r}")
    return {"multi_label": True, "thresholds": None if thresholds is None else tuple(thresholds)}


def set_names(labels: tuple[str, ...], sets: np.ndarray) -> list[tuple[str, ...]]:
    """Each row's label set ``[N, K]`` bool as the names in it, in label order."""
    return [tuple(name for name, on in zip(labels, row) if on) for row in np.asarray(sets)]
