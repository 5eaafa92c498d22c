"""A trained classifier (or a GPT-2 folder) out to Hugging Face's format.

``export_classifier(run_dir, out)`` writes a folder that
``transformers.GPT2ForSequenceClassification.from_pretrained(out)`` and
``pipeline("text-classification", model=out)`` load, with the same class
probabilities as ``Classifier.predict``:

* transformers reads the last token that is not padding (``pad_token_id``), which is
  this package's ``last-real`` pool; the other pools have no counterpart there and
  are refused with the reason.
* transformers' ``score`` layer has no bias, this package's head has one. The bias is
  folded into ``ln_f``'s bias: with head kernel ``W`` [E, C] and bias ``b`` [C], a
  shift ``d`` [E] with ``d W = b`` gives ``(ln_f(x) + d) W = ln_f(x) W + b``. It exists
  when ``W`` has rank C (always, for trained heads with C <= E); ``d`` is the
  least-norm solution, computed in float64, and the export checks ``d W`` against
  ``b``. Only ``score`` reads ``ln_f``'s output in a sequence classifier, so nothing
  else changes.
* LoRA adapters are merged into the weights first.

``export_backbone(model_dir, out)`` writes any GPT-2 folder this package reads
(OpenAI's TF checkpoint included) as a Hugging Face ``GPT2LMHeadModel`` folder: the
one-time conversion after which TensorFlow is no longer needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gpt2_jax.classifier.multilabel import PROBLEM_TYPE, thresholds_of
from gpt2_jax.classifier.saved import load_classifier, read_spec
from gpt2_jax.data.encoding import kept_words
from gpt2_jax.data.tokenizer import END_OF_TEXT, END_OF_TEXT_ID, bpe_files, tiktoken_cached_files
from gpt2_jax.model.gpt import merge_lora
from gpt2_jax.weights.hf import check_new_folder, save_hf_gpt2
from gpt2_jax.weights.names import HF_PREFIX, HF_SCORE, lab_params
from gpt2_jax.weights.pretrained import load_pretrained

EXPORT_NOTE = "gpt2_jax_export.json"
FOLD_TOLERANCE = 1e-5  # |d W - b| allowed, relative to max(1, |b|)


class ExportError(ValueError):
    """This classifier cannot be expressed in transformers' format; the message says why."""


def fold_head_bias(kernel, bias, ln_bias) -> tuple[np.ndarray, float]:
    """``ln_bias + d`` with ``d @ kernel == bias`` (least-norm ``d``), and the largest
    ``|d @ kernel - bias|`` in float64. Raises ``ExportError`` when ``kernel`` [E, C]
    has rank below C, so that no such ``d`` exists."""
    w = np.asarray(kernel, np.float64)
    b = np.asarray(bias, np.float64)
    e, c = w.shape
    rank = np.linalg.matrix_rank(w)
    if rank < c:
        raise ExportError(
            f"the head's kernel [{e}, {c}] has rank {rank} < {c} classes, so its "
            "bias cannot be folded into ln_f; transformers' score layer has no "
            "bias to hold it"
        )
    d = np.linalg.lstsq(w.T, b, rcond=None)[0]
    new = np.asarray(ln_bias, np.float64) + d
    error = float(
        np.abs(
            new.astype(np.float32).astype(np.float64) @ w
            - np.asarray(ln_bias, np.float32).astype(np.float64) @ w
            - b
        ).max()
    )
    if error > FOLD_TOLERANCE * max(1.0, float(np.abs(b).max())):
        raise ExportError(
            f"folding the head's bias into ln_f leaves an error of {error:.2e} in "
            "the logits; the head is too close to singular to export exactly"
        )
    return new.astype(np.float32), error


def _check_exportable(spec) -> None:
    if spec.chunking is not None:
        raise ExportError(
            "this classifier cuts long texts into chunks and combines their features "
            f"(--long-texts chunk, {spec.chunking.pool} of the chunks) before its head; "
            "transformers has no such model, so use experiments.classify or the server"
        )
    if spec.pool == "last":
        raise ExportError(
            "this classifier reads position max_length-1 (--pool last, the lab's), which is "
            "padding for every shorter text; transformers reads the last token that is not "
            "padding, so its answers would differ. Train with --pool last-real to export, or "
            "use experiments.classify"
        )
    if spec.pool != "last-real":
        raise ExportError(
            f"this classifier pools with {spec.pool!r}; transformers' "
            "GPT2ForSequenceClassification reads only the last real token "
            "(--pool last-real)"
        )
    if spec.truncate not in ("head", "tail"):
        raise ExportError(
            f"this classifier keeps the first and the last tokens of a long text "
            f"(--truncate {spec.truncate}); a transformers tokenizer cuts one side only. "
            "Train with --truncate head or tail to export, or use experiments.classify"
        )
    if not spec.model.causal:
        raise ExportError(
            "this classifier was trained without the causal mask; transformers' "
            "GPT-2 always applies it"
        )


def export_classifier(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the classifier saved in ``run_dir`` as a transformers
    ``GPT2ForSequenceClassification`` folder ``out_dir`` (new or empty)."""
    check_new_folder(out_dir)
    _check_exportable(read_spec(run_dir))  # before the weights are read
    _, params, spec = load_classifier(run_dir)
    cfg = spec.model
    if cfg.lora_rank:
        params, cfg = merge_lora(params, cfg)
    backbone = lab_params(params)
    kernel = np.asarray(params["head"]["kernel"], np.float32)
    bias = np.asarray(params["head"]["bias"], np.float32)
    backbone["b"], fold_error = fold_head_bias(kernel, bias, backbone["b"])
    labels = list(spec.labels)
    bpe = bpe_files(run_dir) or tiktoken_cached_files()
    if bpe is None:
        raise ExportError(
            f"{run_dir} has no encoder.json + vocab.bpe and tiktoken's cache has "
            "no GPT-2 files either, so the export would have no tokenizer; copy "
            "GPT-2's encoder.json and vocab.bpe into the run folder"
        )
    out = save_hf_gpt2(
        out_dir,
        cfg.to_settings(),
        backbone,
        bpe=bpe,
        prefix=HF_PREFIX,
        extra_tensors={HF_SCORE: np.ascontiguousarray(kernel.T)},
        config_extra={
            "architectures": ["GPT2ForSequenceClassification"],
            "id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)},
            "pad_token_id": END_OF_TEXT_ID,
            "problem_type": PROBLEM_TYPE if spec.multi_label else "single_label_classification",
        },
        tokenizer_extra={
            "pad_token": END_OF_TEXT,
            "model_max_length": spec.max_length,
            "padding_side": "right",
            "truncation_side": "left" if spec.truncate == "tail" else "right",
        },
    )
    note = {
        "exported_from": Path(run_dir).resolve().name,
        "pool": spec.pool,
        "max_length": spec.max_length,
        "labels": labels,
        "head_bias": "folded into transformer.ln_f.bias (score has no bias)",
        "head_bias_fold_max_error": fold_error,
        "lora": "merged" if spec.model.lora_rank else "none",
        # several labels per text: a sigmoid per label, and each label's threshold
        **(
            {"thresholds": dict(zip(labels, thresholds_of(spec).tolist()))}
            if spec.multi_label
            else {}
        ),
        "truncation": f"trained on {kept_words(spec.max_length, spec.truncate)} of each "
        "text; pass "
        "truncation=True to the tokenizer or pipeline to do the same",
    }
    (out / EXPORT_NOTE).write_text(json.dumps(note, indent=2))
    return out


def export_backbone(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the GPT-2 in ``model_dir`` (either layout) as a Hugging Face folder with
    ``model.safetensors``; weights are copied bit for bit, the tokenizer files from the
    folder (or tiktoken's cached GPT-2 files; neither: the folder has none)."""
    check_new_folder(out_dir)
    settings, params = load_pretrained(model_dir)
    return save_hf_gpt2(
        out_dir, settings, params, bpe=bpe_files(model_dir) or tiktoken_cached_files()
    )
