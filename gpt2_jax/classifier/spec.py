"""What a classifier is: ``ClassifierConfig`` (labels, pooling, max length, model
config; saved as ``classifier.json``), and ``with_class_head``, the parameters of a
new one built from GPT-2's."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.classifier.multilabel import (
    check_label_sets,
    decide_sets,
    sets_dict,
    sets_from_dict,
)
from gpt2_jax.data.chunks import Chunking
from gpt2_jax.data.encoding import check_truncate
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params, param_shapes
from gpt2_jax.model.pooling import check_pool
from gpt2_jax.util.tree import named_leaves, path_name

MODEL_SIZE_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "num_classes")


def with_class_head(pretrained, cfg: GPTConfig, seed: int) -> tuple[dict, list[str]]:
    """Parameters for ``GPTModel(cfg)`` (``cfg.num_classes`` set): every leaf that
    ``pretrained`` has is taken from it, the others (the class head) are initialised
    from ``seed``. Returns ``(params, names initialised)``.

    Only the missing leaves are initialised: the init runs under ``jit`` and returns
    just those, so XLA drops the rest and no second copy of the backbone is made."""
    if pretrained is None:
        fresh = init_params(cfg, seed)
        return fresh, list(named_leaves(fresh))
    have = named_leaves(pretrained)
    shapes = param_shapes(cfg)
    want = named_leaves(shapes)
    wrong = [
        f"{n}: checkpoint {have[n].shape} vs model {want[n].shape}"
        for n in want
        if n in have and tuple(have[n].shape) != want[n].shape
    ]
    extra = [n for n in have if n not in want]
    if wrong or extra:
        raise ValueError(
            "pretrained weights do not fit the classifier: "
            + "; ".join(wrong + [f"{n}: not in the model" for n in extra])
        )
    missing = [n for n in want if n not in have]
    fresh = jax.jit(
        lambda: {
            n: leaf for n, leaf in named_leaves(init_params(cfg, seed)).items() if n in missing
        }
    )()
    merged = jax.tree_util.tree_map_with_path(
        lambda path, _: (
            fresh[path_name(path)]
            if path_name(path) in fresh
            else jnp.asarray(have[path_name(path)])
        ),
        shapes,
    )
    return merged, missing


# --------------------------------------------------------------------------- config


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to use a trained classifier besides its weights.

    ``model``: the GPT-2 config (``num_classes == len(labels)``); ``labels``: class
    names, index = class id; ``pool``: which position is read (``pooling.POOLS``);
    ``max_length``: tokens per text, longer texts are truncated to it, keeping the part
    ``truncate`` names (``data.encoding.TRUNCATIONS``; ``head`` where an older
    classifier.json has no such key). Frozen and hashable, so it can be a static argument of ``jax.jit``.
    """

    model: GPTConfig
    labels: tuple[str, ...]
    pool: str
    max_length: int
    truncate: str = "head"
    temperature: float = 1.0  # probabilities are softmax(logits / temperature)
    threshold: float | None = None  # two classes: the second when its probability >= this
    chunking: Chunking | None = None  # --long-texts chunk: long texts cut, chunks combined
    # several labels per text: a sigmoid per label, label k in the set when its probability
    # reaches thresholds[k] (None: 0.5 for every label); see classifier.multilabel
    multi_label: bool = False
    thresholds: tuple[float, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.model, GPTConfig):
            raise TypeError(
                f"ClassifierConfig.model must be a GPTConfig, got {type(self.model).__name__}"
            )
        if not isinstance(self.labels, (list, tuple)) or not all(
            isinstance(x, str) for x in self.labels
        ):
            raise ValueError(
                f"ClassifierConfig.labels must be a sequence of class names "
                f"(strings), got {self.labels!r}"
            )
        object.__setattr__(self, "labels", tuple(self.labels))  # lists (JSON) -> hashable
        if len(set(self.labels)) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(
                f"ClassifierConfig.labels must be >= 2 distinct names, got {list(self.labels)}"
            )
        if self.model.num_classes != len(self.labels):
            raise ValueError(
                f"ClassifierConfig: model.num_classes={self.model.num_classes} but "
                f"{len(self.labels)} labels {list(self.labels)}"
            )
        check_pool(self.pool)
        check_truncate(self.truncate)
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature < math.inf):
            raise ValueError(
                f"ClassifierConfig.temperature must be a positive number, got {self.temperature!r}"
            )
        if self.threshold is not None and (
            len(self.labels) != 2
            or not isinstance(self.threshold, (int, float))
            or not 0 <= self.threshold <= 1
        ):
            raise ValueError(
                "ClassifierConfig.threshold must be None or, for two labels, a probability in "
                f"[0, 1]; got {self.threshold!r} with {len(self.labels)} labels"
            )
        if self.chunking is not None and (
            not isinstance(self.chunking, Chunking) or self.chunking.length != self.max_length
        ):
            raise ValueError(
                "ClassifierConfig.chunking must be None or a Chunking whose length is "
                f"max_length {self.max_length}; got {self.chunking!r}"
            )
        check_label_sets(self)
        ctx = self.model.context_length
        if not is_int(self.max_length) or not 0 < self.max_length <= ctx:
            raise ValueError(
                f"ClassifierConfig.max_length must be an int in 1..{ctx} (the "
                f"model's context_length), got {self.max_length!r}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"model": {...GPTConfig fields}, "labels": [...], "pool",
        "max_length", "truncate"}``."""
        return {
            "model": dataclasses.asdict(self.model),
            "labels": list(self.labels),
            "pool": self.pool,
            "max_length": self.max_length,
            "truncate": self.truncate,
            # only when fitted: a reader of format 1 would ignore them and predict otherwise
            **({"temperature": self.temperature} if self.temperature != 1.0 else {}),
            **({"threshold": self.threshold} if self.threshold is not None else {}),
            **({"chunking": self.chunking.to_dict()} if self.chunking is not None else {}),
            **(sets_dict(self) if self.multi_label else {}),
        }

    def decide(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, class ids)`` from the model's probabilities [N, C]: the saved
        temperature applied (``softmax(log p / T)`` equals ``softmax(logits / T)``), then
        ``choose``. Several labels per text: ``(probabilities, [N, K] bool label sets)``."""
        if self.multi_label:
            return probs, decide_sets(self, probs)
        if self.temperature != 1.0:
            with np.errstate(divide="ignore"):  # a probability of 0 stays 0
                z = np.log(np.asarray(probs, np.float64)) / self.temperature
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return probs, self.choose(probs)

    def choose(self, probs: np.ndarray) -> np.ndarray:
        """Class ids from (calibrated) probabilities [N, C]: the argmax, or with a
        threshold the second class where its probability reaches it."""
        if self.threshold is None:
            return probs.argmax(axis=1)
        return (probs[:, 1] >= self.threshold).astype(np.int64)

    def with_threshold(self, threshold: float | None) -> ClassifierConfig:
        """This config deciding by ``threshold`` instead of the saved one (None: the
        argmax); refused, like a saved one, unless two labels and a probability, and
        always for several labels per text (each label has its own threshold)."""
        if self.multi_label:
            raise ValueError(
                "with_threshold is for one label per text; this classifier gives label sets, "
                "each label deciding by its own threshold (ClassifierConfig.thresholds)"
            )
        return dataclasses.replace(self, threshold=threshold)

    @property
    def format(self) -> int:
        """classifier.json's format: 3 when it chunks long texts or has several labels per
        text (an older reader would truncate, or apply a softmax), 2 when it holds fitted
        decisions, else 1."""
        if self.chunking is not None or self.multi_label:
            return 3
        return 2 if self.temperature != 1.0 or self.threshold is not None else 1

    @classmethod
    def from_dict(cls, d) -> ClassifierConfig:
        """Inverse of ``to_dict``; other keys (``format``, ``tokenizer``) are ignored.
        Raises one ``ValueError`` naming the key that is missing or wrong."""
        if not isinstance(d, dict):
            raise ValueError(
                f"expected a JSON object with keys model, labels, pool, "
                f"max_length; got {type(d).__name__}"
            )
        missing = [k for k in ("model", "labels", "pool", "max_length") if k not in d]
        if missing:
            raise ValueError(f"missing key(s) {missing} (have {sorted(d)})")
        if not isinstance(d["model"], dict):
            raise ValueError(
                f"key 'model' must be an object of GPTConfig fields, got {d['model']!r}"
            )
        # Sizes must be there: GPTConfig's defaults (124M) would silently not fit the weights.
        absent = [k for k in MODEL_SIZE_KEYS if k not in d["model"]]
        if absent:
            raise ValueError(f"key 'model' lacks {absent}")
        try:
            model = GPTConfig(**d["model"])
        except (TypeError, ValueError) as err:  # an unknown field, a bad value
            raise ValueError(f"key 'model': {err}") from None
        if not isinstance(d["labels"], list):
            raise ValueError(f"key 'labels' must be a list of class names, got {d['labels']!r}")
        return cls(
            model=model,
            labels=tuple(d["labels"]),
            pool=d["pool"],
            max_length=d["max_length"],
            truncate=d.get("truncate", "head"),  # classifiers saved before --truncate
            temperature=d.get("temperature", 1.0),
            threshold=d.get("threshold"),
            chunking=None if d.get("chunking") is None else Chunking.from_dict(d["chunking"]),
            **sets_from_dict(d),
        )
