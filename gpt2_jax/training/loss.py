"""The weighted loss: class weights (balanced, none or given) and the per-example cross-entropy they weight."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def parse_class_weights(spec: str) -> dict[str, float]:
    """``"ham=1,spam=3.5"`` -> ``{"ham": 1.0, "spam": 3.5}``."""
    out = {}
    for item in spec.split(","):
        name, eq, value = item.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not eq or not name or weight is None or not (math.isfinite(weight) and weight > 0):
            raise ValueError(
                f"class weights {spec!r}: expected 'balanced', 'none' or "
                f"NAME=POSITIVE_NUMBER pairs separated by commas (at {item!r})"
            )
        out[name] = weight
    return out


def class_weights_for(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``n / (k * count_c)``: each class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(
            f"training labels lack class(es) {np.flatnonzero(counts == 0).tolist()}; "
            f"cannot weight classes (counts {counts.tolist()})"
        )
    return (len(labels) / (num_classes * counts)).astype(np.float32)


def class_weights(spec: str, labels: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """The loss weight of each class [k] from ``TrainConfig.class_weights``."""
    k = len(class_names)
    if spec == "balanced":
        return class_weights_for(labels, k)
    if spec == "none":
        return np.ones(k, np.float32)
    given = parse_class_weights(spec)
    unknown = sorted(set(given) - set(class_names))
    missing = [c for c in class_names if c not in given]
    if unknown or missing:
        raise ValueError(
            f"class weights {spec!r}: "
            + "; ".join(
                ([f"no class named {unknown}"] if unknown else [])
                + ([f"no weight for {missing}"] if missing else [])
            )
            + f" (classes: {list(class_names)})"
        )
    return np.asarray([given[c] for c in class_names], np.float32)


def per_example_nll(logits, labels):
    """[B, C], [B] -> [B]: -log softmax(logits)[label]."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def example_weights(labels, weights, ignore_index: int | None = None):
    """[B]: each example's class weight; 0 for label ``ignore_index``."""
    w = weights[jnp.clip(labels, 0, weights.shape[0] - 1)]
    return w if ignore_index is None else jnp.where(labels == ignore_index, 0.0, w)


def weighted_cross_entropy(logits, labels, weights, ignore_index: int | None = None):
    """Mean of ``w[y] * nll`` divided by the mean of ``w[y]`` (PyTorch's weighted mean);
    examples of class ``ignore_index`` count for nothing (0 if all are ignored)."""
    nll = per_example_nll(logits, jnp.clip(labels, 0, logits.shape[-1] - 1))
    w = example_weights(labels, weights, ignore_index)
    return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)
