"""A trained classifier out to ONNX, and run back with onnxruntime.

``export_onnx(run_dir, out_dir)`` goes through the transformers folder that
``export_classifier`` writes (same pools, same head-bias fold; what it refuses, such as
``--pool mean`` or chunked long texts, is refused before the weights are loaded):
PyTorch's exporter traces ``GPT2ForSequenceClassification`` with a softmax on top, the
saved temperature folded in, or for several labels per text a sigmoid per label, so the
graph's output is the probabilities ``Classifier.predict_proba`` gives. Inputs:
``input_ids`` and ``attention_mask`` [batch, tokens] (int64, any batch and any length up
to the context), padding on the right with GPT-2's end-of-text id. The folder also holds
the tokenizer files and ``gpt2_jax_onnx.json`` (labels, max length, truncated side,
decision ``threshold``, or ``multi_label`` and the per-label ``thresholds``, and the
largest difference from ``Classifier.predict_proba`` measured on probe texts when it was
written; an export above ``ONNX_TOLERANCE`` is refused).

``OnnxClassifier.load(out_dir).predict(texts)`` tokenizes and truncates as training did
and runs the graph with onnxruntime: the same labels (label sets, as tuples of names,
for several labels per text) and probabilities without JAX.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from gpt2_jax.classifier.export import ExportError, _check_exportable, export_classifier
from gpt2_jax.classifier.multilabel import set_names, thresholds_of
from gpt2_jax.classifier.saved import read_spec
from gpt2_jax.data.tokenizer import END_OF_TEXT_ID
from gpt2_jax.weights.hf import check_new_folder

ONNX_FILE = "model.onnx"
ONNX_NOTE = "gpt2_jax_onnx.json"
ONNX_TOLERANCE = 1e-4  # largest |p_onnx - p_jax| allowed on the probe texts
OPSET = 17
PROBES = (  # texts of several lengths, one past any max_length, to check the graph
    "hi",
    "Ok lar... Joking wif u oni...",
    "WINNER!! As a valued network customer you have been selected to receive a prize",
    " ".join(["a long text that goes on, and on, past what the classifier reads"] * 40),
)
_COPIED = ("config.json", "vocab.json", "merges.txt", "tokenizer_config.json")


def _torch_modules():
    try:
        import torch
        import transformers
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs torch and transformers ({err}): pip install 'gpt2_jax[onnx]'"
        ) from None
    return torch, transformers


def export_onnx(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the classifier saved in ``run_dir`` as ``out_dir``/model.onnx (a new or empty
    folder) with its tokenizer files and note; checked against ``Classifier`` on probes."""
    from gpt2_jax.classifier.classifier import Classifier

    check_new_folder(out_dir)
    out = Path(out_dir)
    _check_exportable(read_spec(run_dir))  # a refused classifier fails before its weights load
    classifier = Classifier.load(run_dir)
    spec = classifier.spec
    with tempfile.TemporaryDirectory() as tmp:
        hf = export_classifier(run_dir, Path(tmp) / "hf")
        out.mkdir(parents=True, exist_ok=True)
        _trace(hf, spec, out / ONNX_FILE)
        for name in _COPIED:
            if (hf / name).is_file():
                shutil.copyfile(hf / name, out / name)
    note = {
        "exported_from": Path(run_dir).resolve().name,
        "labels": list(spec.labels),
        "max_length": spec.max_length,
        "truncate": spec.truncate,
        "threshold": spec.threshold,
        "temperature": spec.temperature,
        "multi_label": spec.multi_label,
        "thresholds": thresholds_of(spec).tolist() if spec.multi_label else None,
        "inputs": "input_ids, attention_mask: int64 [batch, tokens], padded on the right "
        f"with {END_OF_TEXT_ID}",
        "output": "probabilities [batch, labels]: "
        + (
            "a sigmoid per label (a label is in the set when it reaches its threshold)"
            if spec.multi_label
            else "a softmax, the temperature applied"
        ),
        "opset": OPSET,
    }
    (out / ONNX_NOTE).write_text(json.dumps(note, indent=2))
    probes = list(PROBES)
    error = float(
        np.abs(
            OnnxClassifier.load(out).predict_proba(probes) - classifier.predict_proba(probes)
        ).max()
    )
    if not error <= ONNX_TOLERANCE:  # also NaN: nothing is left that looks usable
        for name in (ONNX_FILE, ONNX_NOTE):
            (out / name).unlink(missing_ok=True)
        raise ExportError(
            f"the ONNX graph in {out} differs from the classifier by {error:.2e} on probe "
            f"texts (allowed {ONNX_TOLERANCE:g}); please report it, with the run's "
            "classifier.json"
        )
    note["probe_max_abs_difference"] = error
    (out / ONNX_NOTE).write_text(json.dumps(note, indent=2))
    return out


def _trace(hf_dir: Path, spec, path: Path) -> None:
    """PyTorch's (TorchScript) exporter over the transformers model in ``hf_dir``, with
    ``spec``'s output on top: a sigmoid per label, or a softmax with its temperature."""
    torch, transformers = _torch_modules()
    model = transformers.GPT2ForSequenceClassification.from_pretrained(
        hf_dir, attn_implementation="eager"
    )
    model.config.use_cache = False
    model.eval()

    class Probabilities(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            if spec.multi_label:
                return torch.sigmoid(logits)
            return torch.softmax(logits / spec.temperature, dim=-1)

    ids = torch.full((2, 8), END_OF_TEXT_ID, dtype=torch.int64)
    ids[0, :5], ids[1, :] = torch.arange(5) + 100, torch.arange(8) + 200
    mask = (ids != END_OF_TEXT_ID).long()
    dynamic = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side branches
        torch.onnx.export(
            Probabilities(),
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["probabilities"],
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                "probabilities": {0: "batch"},
            },  # fmt: skip
            opset_version=OPSET,
            dynamo=False,
        )


class OnnxClassifier:
    """An exported ONNX classifier run by onnxruntime: ``load(folder).predict(texts)``."""

    def __init__(self, folder: Path, note: dict, session, tokenizer):
        self.folder, self.note, self.session, self.tokenizer = folder, note, session, tokenizer
        self.labels: tuple[str, ...] = tuple(note["labels"])

    @classmethod
    def load(cls, folder: str | os.PathLike) -> OnnxClassifier:
        from gpt2_jax.data.tokenizer import get_tokenizer

        try:
            import onnxruntime
        except ImportError as err:
            raise ExportError(
                f"running ONNX needs onnxruntime ({err}): pip install 'gpt2_jax[onnx]'"
            ) from None
        folder = Path(folder)
        note = _read_note(folder)
        session = onnxruntime.InferenceSession(
            str(folder / ONNX_FILE), providers=["CPUExecutionProvider"]
        )
        return cls(folder, note, session, get_tokenizer(folder))

    def _ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from gpt2_jax.data.encoding import token_lists

        n, side = self.note["max_length"], self.note["truncate"]
        tokens = [t[-n:] if side == "tail" else t[:n] for t in token_lists(self.tokenizer, texts)]
        width = max(len(t) for t in tokens)
        ids = np.full((len(tokens), width), END_OF_TEXT_ID, np.int64)
        for i, t in enumerate(tokens):
            ids[i, : len(t)] = t
        return ids, (np.arange(width)[None] < np.array([len(t) for t in tokens])[:, None])

    def predict_proba(self, texts, batch_size: int = 16) -> np.ndarray:
        """[N, labels] probabilities, texts checked as ``Classifier`` checks them."""
        from gpt2_jax.data.texts import check_texts

        texts = check_texts(texts)
        out = []
        for start in range(0, len(texts), batch_size):
            ids, mask = self._ids(texts[start : start + batch_size])
            feed = {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
            out.append(self.session.run(None, feed)[0])
        return np.concatenate(out)

    def predict(self, texts, batch_size: int = 16) -> list:
        """The label of each text: the most probable, or with a saved threshold (two
        labels) the second where its probability reaches it. Several labels per text:
        each text's label set, the names (in label order) whose probability reaches
        their threshold."""
        probs = self.predict_proba(texts, batch_size)
        if self.note.get("multi_label"):
            return set_names(self.labels, probs >= np.asarray(self.note["thresholds"]))
        threshold = self.note.get("threshold")
        ids = probs.argmax(1) if threshold is None else (probs[:, 1] >= threshold).astype(int)
        return [self.labels[k] for k in ids]


def _read_note(folder: Path) -> dict:
    """``gpt2_jax_onnx.json``, checked for what ``OnnxClassifier`` reads."""
    path = folder / ONNX_NOTE
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
        labels, n, side = note["labels"], note["max_length"], note["truncate"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportError(
            f"{path}: not an ONNX classifier written by experiments.export --to onnx "
            f"({type(err).__name__}: {err})"
        ) from None
    ok = (
        isinstance(labels, list)
        and len(labels) >= 2
        and all(isinstance(x, str) for x in labels)
        and isinstance(n, int)
        and n > 0
        and side in ("head", "tail")
    )
    if not ok:
        raise ExportError(f"{path}: labels, max_length or truncate are not what export wrote")
    if not _decisions_ok(note, len(labels)):
        raise ExportError(
            f"{path}: threshold, thresholds or multi_label are not what export wrote (one "
            "label: threshold null or, for two labels, a probability; label sets: "
            "multi_label true and one probability per label in thresholds)"
        )
    return note


def _decisions_ok(note: dict, k: int) -> bool:
    """The note's decision keys as export writes them (notes written before label sets
    have no ``multi_label``/``thresholds``: one label per text)."""

    def probability(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1

    multi, threshold = note.get("multi_label", False), note.get("threshold")
    thresholds = note.get("thresholds")
    if not isinstance(multi, bool):
        return False
    if multi:
        return (
            threshold is None
            and isinstance(thresholds, list)
            and len(thresholds) == k
            and all(probability(t) for t in thresholds)
        )
    return thresholds is None and (threshold is None or (k == 2 and probability(threshold)))
