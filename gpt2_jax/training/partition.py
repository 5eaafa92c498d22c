"""What trains: presets and patterns resolved once into a Partition of the parameter tree, and the label tree the optimizer reads."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

import jax
import numpy as np

from gpt2_jax.util.tree import Params, count_params, named_leaves, path_name, subtree

TRAINABLE_PRESETS = {
    "last_layer": "the class head only",
    "last_block": "the last transformer block, the final LayerNorm and the head (the lab's)",
    "last_two_blocks": "the last two blocks, the final LayerNorm and the head",
    "all": "every parameter",
    "lora": "the LoRA adapters (--lora-rank) and the head",
    "auto": "last_block with pretrained weights, all with random ones",
}
LORA_PATTERN = ".*/lora_[ab]"  # the adapters' leaves (model.Linear)
TRAINABLE, FROZEN = "trainable", "frozen"  # the labels of Partition.labels


def resolve_trainable(
    items: Iterable[str], n_layers: int, pretrained: bool = True
) -> tuple[str, ...]:
    """Presets expanded to regular expressions over parameter names."""
    out = []
    for item in items:
        if item == "auto":
            item = "last_block" if pretrained else "all"
        if item == "last_layer":
            out.append("head/.*")
        elif item == "last_block":
            out += [f"h{n_layers - 1}/.*", "ln_f/.*", "head/.*"]
        elif item == "last_two_blocks":
            out += [f"h{max(0, n_layers - 2)}/.*", f"h{n_layers - 1}/.*", "ln_f/.*", "head/.*"]
        elif item == "all":
            out.append(".*")
        elif item == "lora":
            out += [LORA_PATTERN, "head/.*"]
        else:
            try:
                re.compile(item)
            except re.error as err:
                raise ValueError(
                    f"--trainable {item!r} is neither a preset "
                    f"({', '.join(TRAINABLE_PRESETS)}) nor a valid regular "
                    f"expression: {err}"
                ) from None
            out.append(item)
    return tuple(dict.fromkeys(out))


@dataclasses.dataclass(frozen=True)
class Partition:
    """Which leaves train. Everything that depends on that choice asks this object."""

    patterns: tuple[str, ...]
    names: frozenset[str]  # slash-joined names of the trainable leaves
    counts: dict[str, int]  # parameters: {"trainable": ..., "frozen": ...}

    @classmethod
    def from_patterns(cls, params, patterns: Iterable[str]) -> Partition:
        patterns = tuple(patterns)
        compiled = [re.compile(p) for p in patterns]
        leaves = named_leaves(params)
        unused = [p for p, c in zip(patterns, compiled) if not any(c.fullmatch(n) for n in leaves)]
        if unused:
            tops = sorted({n.split("/")[0] for n in leaves}, key=lambda s: (len(s), s))
            raise ValueError(
                f"trainable pattern(s) {unused} match no parameter; names look like "
                f"{next(iter(leaves))!r}, top-level scopes are {tops}"
            )
        names = frozenset(n for n in leaves if any(c.fullmatch(n) for c in compiled))
        n_train = sum(int(np.prod(leaves[n].shape)) for n in names)
        return cls(
            patterns, names, {"trainable": n_train, "frozen": count_params(params) - n_train}
        )

    def trainable(self, params: Params) -> Params:
        return subtree(params, self.names.__contains__)

    def frozen(self, params: Params) -> Params:
        return subtree(params, lambda n: n not in self.names)

    def labels(self, params: Params) -> Params:
        """``params``'s structure with ``"trainable"`` or ``"frozen"`` at every leaf: the
        label tree ``optax.multi_transform`` reads (see ``freeze``)."""
        return jax.tree_util.tree_map_with_path(
            lambda path, _: TRAINABLE if path_name(path) in self.names else FROZEN, params
        )

    def first_block(self, n_layers: int) -> int:
        """Index of the first block with a trainable leaf (``n_layers`` if none; 0 when
        an embedding trains, since then nothing before block 0 is fixed either)."""
        first = n_layers
        for name in self.names:
            top = name.split("/")[0]
            if top in ("wte", "wpe"):
                return 0
            if top.startswith("h") and top[1:].isdigit():
                first = min(first, int(top[1:]))
        return first


def merge(a: dict, b: dict) -> dict:
    """The union of two disjoint nested dicts (e.g. trainable and frozen trees)."""
    out = dict(a)
    for key, value in b.items():
        out[key] = merge(out[key], value) if key in out else value
    return out
