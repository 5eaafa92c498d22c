"""GPT-2 with its LM head replaced by a class head, in use:
``Classifier.load(run_dir).predict(texts)`` needs nothing else.

A saved classifier is a run folder holding

* ``classifier/`` - the parameters: ``weights.bin`` (what is loaded, checked against the
  SHA-256 in classifier.json; ``classifier.weights_file``) and orbax's files (what older
  versions, and folders saved before weights.bin, load),
* ``encoder.json`` + ``vocab.bpe`` - the tokenizer,
* ``classifier.json`` - what the classifier *is* (``ClassifierConfig``: label names,
  pooling, max length, truncated side, model config, and where fitted or chosen the
  temperature and decision threshold, the chunking of long texts, or several labels per
  text with their thresholds), written last, so its presence means the rest is complete.

What a classifier is and how a new one is built lives in ``classifier.spec``, how it
is saved and loaded in ``classifier.saved``; this module predicts (``Classifier``,
``predict_proba``, ``class_probs``) and re-exports the names of both, so
``from gpt2_jax.classifier.classifier import ...`` works as before.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from gpt2_jax.classifier.multilabel import set_names

# re-exported: the classifier's public names, importable from here as before
from gpt2_jax.classifier.saved import (  # noqa: F401
    META_FILE,
    PARAMS_DIR,
    check_params,
    load_classifier,
    read_spec,
    save_classifier,
)
from gpt2_jax.classifier.spec import ClassifierConfig, is_int, with_class_head  # noqa: F401
from gpt2_jax.data.batches import BUCKET_STEP, prefix_schedule
from gpt2_jax.data.encoding import encode, token_lists
from gpt2_jax.data.texts import check_texts
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.model.pooling import check_pool, classify, reads_padding
from gpt2_jax.parallel.mesh import Placement

PREDICT_DTYPES = ("float32", "bfloat16")  # Classifier.with_dtype, classify --dtype


@functools.partial(jax.jit, static_argnames=("cfg", "pool", "multi_label"))
def class_probs(params, ids, lengths, *, cfg: GPTConfig, pool: str, multi_label: bool = False):
    """Class probabilities [B, C] for token ids [B, W] with real lengths [B] (several
    labels per text: each label's sigmoid).

    Compiled once per (ids shape, cfg, pool): the weights are an argument, not
    constants baked into the program, so any parameter tree of these shapes reuses it.
    Only the pooled position is computed in the last block (exact, see GPTModel)."""
    logits = classify(GPTModel(cfg), params, ids, lengths, pool)
    return jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits, axis=-1)


def checked_tokens(tokenizer, texts: list[str], vocab_size: int) -> list[list[int]]:
    """Each text's token ids, refused in one line if one is outside the vocabulary."""
    tokens = token_lists(tokenizer, texts)
    for i, toks in enumerate(tokens):
        if toks and max(toks) >= vocab_size:  # an out-of-range id would be silently clamped
            raise ValueError(
                f"text {i} has token id {max(toks)}, but the model's vocabulary "
                f"has {vocab_size} ids: tokenizer and model do not belong together"
            )
    return tokens


def _encode_texts(
    tokenizer, texts: list[str], max_length: int, vocab_size: int, truncate: str = "head"
):
    """Encoded as in training (``data.encode``): ``(Encoded, truncated [N] bool)``."""
    tokens = checked_tokens(tokenizer, texts, vocab_size)
    truncated = np.array([len(t) > max_length for t in tokens], bool)
    return encode(tokens, np.zeros(len(texts)), max_length, truncate), truncated


def _probs(
    cfg: GPTConfig,
    params,
    ids: np.ndarray,
    lengths: np.ndarray,
    pool: str,
    batch_size: int,
    *,
    packed: bool = True,
    multi_label: bool = False,
    placement: Placement | None = None,
) -> np.ndarray:
    """[N, C] probabilities for encoded ids [N, L] (L = max_length).

    Pools that read only real tokens go through packed rows (``classifier.packed``:
    several texts to a row, as training's prefix), unless ``packed`` is false (kept for
    comparison). Otherwise every batch has ``batch_size`` rows (the last repeats rows,
    the extra results are dropped), so few shapes compile; pools that read only real
    tokens take rows in length order and cut each batch to ``bucket_length(longest,
    L)``: exact, since under the causal mask nothing after the last real token reaches
    them. "last" reads position L-1, so its batches keep the full width. ``placement``:
    the rows of each batch are split over its devices (rounded up to a multiple of them;
    ``params`` already on its mesh)."""
    if not is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(ids)
    if cfg.num_classes is None:
        raise ValueError(
            "class probabilities need a classifier (num_classes set), not a language model"
        )
    if packed and n and not reads_padding(pool, cfg.causal):
        from gpt2_jax.classifier.packed import packed_probs  # the training stack, if needed

        return packed_probs(
            cfg,
            params,
            ids,
            lengths,
            pool,
            batch_size,
            cfg.matmul_dtype,
            multi_label=multi_label,
            placement=placement,
        )
    out = np.zeros((n, cfg.num_classes), np.float32)
    schedule = prefix_schedule(
        lengths,
        ids.shape[1],
        batch_size,
        bucketed=not reads_padding(pool, cfg.causal),
        step=BUCKET_STEP,
    )
    devices = 1 if placement is None else placement.rows
    for idx, width in schedule:
        rows = np.resize(idx, -(-batch_size // devices) * devices)
        x, real = ids[rows, :width], lengths[rows]
        if placement is not None:
            x, real = placement.batch(x, real)
        got = class_probs(params, x, real, cfg=cfg, pool=pool, multi_label=multi_label)
        out[idx] = np.asarray(got)[: len(idx)]
    return out


def predict_proba(
    model: GPTModel,
    params,
    tokenizer,
    texts: list[str],
    max_length: int,
    pool: str,
    batch_size: int = 16,
) -> np.ndarray:
    """Class probabilities [N, C] for raw texts (encoded as in training). Prefer
    ``Classifier``, which reads ``max_length`` and ``pool`` from the saved run."""
    texts = check_texts(texts)  # special tokens: the tokenizer names them (encoding)
    cfg = model.cfg
    length = min(max_length, cfg.context_length)
    data, _ = _encode_texts(tokenizer, texts, length, cfg.vocab_size)
    return _probs(cfg, params, data.ids, data.lengths, check_pool(pool), batch_size)


@dataclass
class Predictions:
    """``labels``: predicted class name per text (the most probable class), or with
    several labels per text the tuple of names in its predicted set (``sets`` [N, C]
    bool); ``probs`` [N, C]: class (label) probabilities, columns in ``class_names`` order;
    ``truncated`` [N] bool: the text had more than ``max_length`` tokens and only its
    first ``max_length`` were read."""

    labels: list
    probs: np.ndarray
    truncated: np.ndarray
    class_names: tuple[str, ...]
    sets: np.ndarray | None = None  # several labels per text: [N, C] bool

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_ids(self) -> np.ndarray:
        """[N] int: index of the predicted class (the argmax, or what a threshold chose;
        several labels per text: the most probable label, whatever the set)."""
        if self.sets is not None:
            return self.probs.argmax(axis=1)
        index = {name: k for k, name in enumerate(self.class_names)}
        return np.array([index[name] for name in self.labels], np.int64)


class Classifier:
    """A trained classifier ready to use: ``Classifier.load(run_dir).predict(texts)``."""

    def __init__(self, spec: ClassifierConfig, params, tokenizer):
        if not isinstance(spec, ClassifierConfig):
            raise TypeError(f"Classifier needs a ClassifierConfig, got {type(spec).__name__}")
        check_params(params, spec.model, "Classifier")
        self.spec = spec
        # On the device once (else host arrays are copied there at every batch), and
        # committed to it: committed and uncommitted arrays (restored vs freshly
        # initialised weights) are different jit cache keys.
        self.params = jax.device_put(params, jax.devices()[0])
        self.tokenizer = tokenizer
        self.dtype = "float32"  # the matmul inputs' type (with_dtype)
        self.placement: Placement | None = None  # the devices sharing each batch (on_mesh)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Classifier:
        """The classifier saved in ``run_dir`` (weights, config and tokenizer)."""
        from gpt2_jax.data.tokenizer import get_tokenizer

        _, params, spec = load_classifier(run_dir)
        return cls(spec, params, get_tokenizer(Path(run_dir)))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"Classifier(labels={s.labels}, pool={s.pool!r}, max_length={s.max_length}, "
            f"emb_dim={s.model.emb_dim}, n_layers={s.model.n_layers})"
        )

    def _run(self, texts, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        texts = check_texts(texts)  # special tokens: the tokenizer names them (encoding)
        s, cfg = self.spec, self.computed
        if s.chunking is not None:
            from gpt2_jax.classifier.documents import document_probs

            return document_probs(s, self.params, self.tokenizer, texts, batch_size, cfg)
        data, truncated = _encode_texts(
            self.tokenizer, texts, s.max_length, s.model.vocab_size, s.truncate
        )
        probs = _probs(
            cfg,
            self.params,
            data.ids,
            data.lengths,
            s.pool,
            batch_size,
            multi_label=s.multi_label,
            placement=self.placement,
        )
        return probs, truncated

    @property
    def computed(self) -> GPTConfig:
        """The model config predictions run: the saved one, matmul inputs of ``dtype``."""
        dtype = None if self.dtype == "float32" else self.dtype
        return dataclasses.replace(self.spec.model, matmul_dtype=dtype)

    def with_dtype(self, dtype: str) -> Classifier:
        """The same classifier (weights shared) with matmul inputs of ``dtype``:
        "float32" (the default) or "bfloat16" (float32 accumulation, as training's
        ``--prefix-dtype bfloat16``; faster only on CPUs with bfloat16 units, AMX or
        AVX512-bf16, and on GPUs; probabilities differ slightly from float32's)."""
        if dtype not in PREDICT_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(PREDICT_DTYPES)}, got {dtype!r}")
        other = copy.copy(self)
        other.dtype = dtype
        return other

    def on_mesh(self, mesh) -> Classifier:
        """The same classifier with each batch's rows split over the devices of
        ``mesh``'s data axis (``parallel.mesh.make_mesh("data=N")``), the weights copied
        to each; a mesh of one device: this classifier. ValueError for an fsdp axis, or a
        classifier that chunks long texts."""
        if mesh.shape.get("fsdp", 1) != 1:
            raise ValueError(
                f"a mesh with fsdp={mesh.shape['fsdp']}: prediction splits rows over the "
                "data axis only, the weights whole on each device; use data=N"
            )
        if self.spec.chunking is not None and mesh.size > 1:
            raise ValueError(
                "this classifier chunks long texts, and its predictions run on one device; "
                "leave out the mesh"
            )
        if mesh.size == 1:
            return self
        other = copy.copy(self)
        other.placement = Placement(mesh)
        other.params = other.placement.tree(self.params)
        return other

    def predict_proba(self, texts, batch_size: int = 16) -> np.ndarray:
        """[N, C] class probabilities (columns in ``labels`` order; calibrated when the
        run fitted a temperature)."""
        return self.spec.decide(self._run(texts, batch_size)[0])[0]

    def with_threshold(self, threshold: float | None) -> Classifier:
        """The same classifier (weights shared, not copied) deciding two classes by
        ``threshold`` on the second one's probability instead of the saved threshold;
        None: the most probable class. ``ValueError`` unless two labels and 0 <= t <= 1
        (never for label sets)."""
        other = copy.copy(self)
        other.spec = self.spec.with_threshold(threshold)
        return other

    def predict(self, texts, batch_size: int = 16) -> Predictions:
        """Label, probabilities and truncation flag of each text: the most probable label,
        or with a decision threshold (two classes: the saved one, or ``with_threshold``'s)
        the second where its probability reaches it."""
        probs, truncated = self._run(texts, batch_size)
        probs, ids = self.spec.decide(probs)
        if self.spec.multi_label:  # ids: [N, C] bool label sets
            return Predictions(set_names(self.labels, ids), probs, truncated, self.labels, ids)
        names = [self.labels[k] for k in ids]
        return Predictions(names, probs, truncated, self.labels)
