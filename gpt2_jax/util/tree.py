"""Small helpers over parameter trees, keyed by slash-joined names like ``h11/attn/c_attn/kernel``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

# A parameter tree: nested dicts keyed by OpenAI's scope names (``h0`` -> ``attn`` ->
# ``c_attn`` -> ``kernel``), arrays (or ShapeDtypeStructs) at the leaves.
Params = dict[str, Any]


def path_name(path) -> str:
    """``(DictKey('h0'), DictKey('attn'), ...)`` -> ``"h0/attn/..."``."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def named_leaves(tree) -> dict[str, Any]:
    """Flat ``{name: leaf}`` in tree order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(path): leaf for path, leaf in flat}


def count_params(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def subtree(tree: Params, keep: Callable[[str], bool], prefix: str = "") -> Params:
    """The nested dict of the leaves whose names ``keep`` accepts (empty branches dropped)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            part = subtree(value, keep, name + "/")
            if part:
                out[key] = part
        elif keep(name):
            out[key] = value
    return out


def same_keys(tree: Params, template: Params) -> Params:
    """The part of the nested dict ``tree`` at the keys ``template`` has (e.g. a whole
    tree's updates cut to its trainable leaves)."""
    return {
        k: same_keys(tree[k], v) if isinstance(v, dict) else tree[k] for k, v in template.items()
    }
