"""The model card (``README.md``) of an exported classifier, written from its run folder.

``write_model_card(run_dir, out_dir, repo_id)`` reads the run's ``metrics.json`` (labels,
data sizes, the selected epoch's validation and test figures, the training config, the
backend it ran on) and the export's note (``gpt2_jax_export.json``: the error left by
folding the head's bias into ``ln_f``), and writes the card with the YAML front matter
the Hub reads (``library_name: transformers``, ``pipeline_tag: text-classification``,
tags). It states only what the run recorded; what it did not record is said so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gpt2_jax.classifier.export import EXPORT_NOTE
from gpt2_jax.finetune.record import METRICS_FILE, RunRecord
from gpt2_jax.util.files import write_text_atomic

CARD_FILE = "README.md"
TAGS = ("gpt2", "text-classification", "gpt2_jax", "jax")


def write_model_card(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, repo_id: str | None = None
) -> Path:
    """``out_dir/README.md``, the card of the classifier exported from ``run_dir``."""
    metrics = Path(run_dir) / METRICS_FILE
    try:  # a classifier saved by the Python API has no run record: a card without figures
        record = RunRecord.read(metrics).to_dict()
    except (OSError, ValueError) as err:
        record = {"unread": f"{metrics}: {' '.join(str(err).split()) or type(err).__name__}"}
    note_file = Path(out_dir) / EXPORT_NOTE
    note = json.loads(note_file.read_text()) if note_file.is_file() else {}
    path = Path(out_dir) / CARD_FILE
    write_text_atomic(path, model_card(record, note, repo_id or Path(out_dir).name))
    return path


def model_card(record: dict[str, Any], note: dict[str, Any], name: str) -> str:
    """The card's text: front matter, then one section per subject."""
    data = record.get("data") or {}
    sections = [
        _front_matter(record),
        f"# {name}\n\n{_summary(record)}",
        _labels(data.get("classes") or note.get("labels") or []),
        _data(data),
        _results(record),
        _export(note),
        _hardware(record),
        "## Training config\n\n```json\n"
        + json.dumps(record.get("config") or {}, indent=2, sort_keys=True)
        + "\n```",
        _usage(name),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _front_matter(record: dict[str, Any]) -> str:
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags:"]
    lines += [f"- {tag}" for tag in TAGS]
    base = (record.get("backbone") or {}).get("hf_repo")
    if base:
        lines.append(f"base_model: {json.dumps(base)}")
    dataset = ((record.get("config") or {}).get("data") or {}).get("dataset")
    if dataset and not Path(dataset.split(":")[0]).exists():  # a Hub name, not a local folder
        lines += ["datasets:", f"- {json.dumps(dataset.split(':')[0])}"]
    return "\n".join([*lines, "---"])


def _summary(record: dict[str, Any]) -> str:
    model = record.get("model_config") or {}
    backbone = record.get("backbone") or {}
    source = backbone.get("hf_repo") or Path(str(backbone.get("folder") or "GPT-2")).name
    text = (
        f"GPT-2 ({model.get('n_layers', '?')} layers, {model.get('emb_dim', '?')} wide) from "
        f"{source}, fine-tuned as a text classifier with gpt2_jax (JAX/Flax) and exported to "
        "transformers' `GPT2ForSequenceClassification`."
    )
    if record.get("unread"):
        text += (
            f"\n\nNo run record could be read ({record['unread']}), so the data, figures "
            "and training config of the run are not given here."
        )
    if backbone.get("random_weights_seed") is not None:
        text += (
            "\n\n**The backbone held random weights (make_checkpoint), not OpenAI's GPT-2: "
            "the figures below measure nothing.**"
        )
    return text


def _labels(classes: list[str]) -> str:
    rows = "\n".join(f"| {i} | {_cell(c)} |" for i, c in enumerate(classes))
    return f"## Labels\n\n| id | label |\n|---|---|\n{rows}"


def _data(data: dict[str, Any]) -> str:
    splits = data.get("splits") or {}
    classes = data.get("classes") or []
    head = "| split | texts | " + " | ".join(_cell(c) for c in classes) + " |"
    rule = "|---|---|" + "---|" * len(classes)
    rows = [
        f"| {name} | {s.get('n', '?')} | " + " | ".join(str(s.get(c, "?")) for c in classes) + " |"
        for name, s in splits.items()
    ]
    files = data.get("files") or {}
    source = ", ".join(f"{k}: `{_source(v)}`" for k, v in files.items())
    return "\n".join(
        [
            "## Data",
            "",
            f"{data.get('rows', '?')} labelled rows ({source}); texts padded or cut to "
            f"{data.get('max_length', '?')} tokens.",
            "",
            head,
            rule,
            *rows,
        ]
    )


def _results(record: dict[str, Any]) -> str:
    epochs = record.get("epochs") or []
    if not epochs:
        return "## Results\n\nThe run recorded no finished epoch."
    selected = record.get("selected") or {}
    number = selected.get("epoch", epochs[-1].get("epoch"))
    epoch = next((e for e in epochs if e.get("epoch") == number), epochs[-1])
    rows = []
    for split in ("val", "test"):
        figures = epoch.get(split)
        if isinstance(figures, dict):
            rows.append(
                f"| {split} | {figures.get('n', '?')} | {_number(figures.get('accuracy'))} | "
                f"{_number(figures.get('macro_f1'))} | {_number(figures.get('loss'))} |"
            )
    why = f" (selected: {selected['by']})" if selected.get("by") else ""
    return "\n".join(
        [
            "## Results",
            "",
            f"Epoch {epoch.get('epoch')} of {len(epochs)}{why}, as the run measured it:",
            "",
            "| split | texts | accuracy | macro F1 | loss |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def _export(note: dict[str, Any]) -> str:
    if not note:
        return ""
    error = note.get("head_bias_fold_max_error")
    said = f"{error:.2e}" if isinstance(error, (int, float)) else "not recorded"
    return (
        "## Export\n\ntransformers' `score` layer has no bias, so the head's bias is folded "
        f"into `transformer.ln_f.bias`; the largest error that leaves in the logits: {said}. "
        f"Pool: {note.get('pool', '?')}; LoRA: {note.get('lora', '?')}. "
        + (f"Truncation: {note['truncation']}." if note.get("truncation") else "")
    )


def _hardware(record: dict[str, Any]) -> str:
    machine = record.get("machine")
    if isinstance(machine, dict):
        machine = ", ".join(f"{k}: {v}" for k, v in machine.items())
    seconds = record.get("total_seconds")
    took = f" in {seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else ""
    said = f"Trained with JAX on {record.get('backend') or 'a backend not recorded'}{took}"
    if machine:
        return f"## Hardware\n\n{said}: {machine}."
    return f"## Hardware\n\n{said} (the run record does not name the CPU or GPU model)."


def _usage(name: str) -> str:
    return (
        "## Use\n\n```python\nfrom transformers import pipeline\n\n"
        f'clf = pipeline("text-classification", model="{name}", top_k=None)\n'
        'clf("your text here", truncation=True)\n```'
    )


def _source(name: str) -> str:
    """A data file by its name (the folders it sat in mean nothing elsewhere); a dataset
    ("--dataset NAME split train") as recorded."""
    return name if name.startswith("--dataset") else Path(name).name


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
