"""The grid's table: each row's descriptive columns (from its flags and its run's
``metrics.json``), its figures, and the book's published figures beside them."""

from __future__ import annotations

from pathlib import Path

from gpt2_jax.commands.grid_rows import BOOK_CONTEXT, BOOK_TOKEN, flag_value
from gpt2_jax.finetune.record import METRICS_FILE, RunRecord


def model_label(settings: dict) -> str:
    """ "124M" for OpenAI's sizes, else the layers and width the checkpoint has."""
    from gpt2_jax.model.config import MODEL_SIZES

    for name, known in MODEL_SIZES.items():
        if all(settings.get(k) == v for k, v in known.items()):
            return name
    return f"custom ({settings.get('n_layer')} layers, {settings.get('n_embd')} dims)"


def describe(flags: list[str], metrics: dict | None) -> dict:
    """The book's descriptive columns for a run with these flags."""
    config = (metrics or {}).get("config", {})
    model = config.get("model", {})
    train = config.get("train", {})
    trainable = train.get("trainable") or [flag_value(flags, "--trainable", "auto")]
    weights = model.get("weights") or flag_value(flags, "--weights", "pretrained")
    trainable = [
        ("last_block" if weights == "pretrained" else "all") if t == "auto" else t
        for t in trainable
    ]  # what "auto" stands for
    length = (metrics or {}).get("data", {}).get("max_length")
    context = flag_value(flags, "--max-length", "longest")
    settings = (metrics or {}).get("settings")
    return {
        "model": (model_label(settings) if settings else flag_value(flags, "--model-size", "124M")),
        "weights": weights,
        "token": model.get("pool") or flag_value(flags, "--pool", "last"),
        "layers": " ".join(trainable),
        "context": f"{context} ({length})" if length else context,
        "causal": model.get("causal_mask", "--disable-causal-mask" not in flags),
        "batch": train.get("batch_size"),
        "accumulation": train.get("accumulation_steps"),
        "ignore_index": train.get("ignore_index"),
    }


def result_of(run_dir: Path) -> dict | None:
    """The figures of a finished run, or None (not run, failed, or still going)."""
    try:
        record = RunRecord.read(run_dir / METRICS_FILE)
    except (OSError, ValueError):
        return None
    if record.status != "finished" or not record.epochs:
        return None
    chosen = record.selected.epoch if record.selected else len(record.epochs)
    last = record.epochs[chosen - 1]
    out = {
        "seconds": record.total_seconds,
        "peak_gib": record.peak_memory_gib,
        "metrics": record.to_dict(),
    }
    for split in ("train", "val", "test"):
        if split in last:
            out[f"{split}_acc"] = 100 * last[split]["accuracy"]
            out[f"{split}_macro_f1"] = last[split].get("macro_f1")
            recall = next((v for k, v in last[split].items() if k.endswith("_recall")), None)
            out[f"{split}_recall"] = recall
    return out


def _pct(value) -> str:
    return "" if value is None else f"{value:.2f}%"


def table(rows: list[dict], records: dict, device: str, shared: list[str]) -> str:
    head = (
        "| row | model | weights | token position | trainable layers | context length "
        "| train acc | val acc | test acc | test spam recall | test macro-F1 | time | "
        "peak memory | device |"
    )
    lines = [head, "|" + "---|" * 14]
    for row in rows:
        rec = records.get(row["name"], {})
        res = rec.get("result")
        d = describe(shared + row["flags"], res["metrics"] if res else None)
        context = d["context"] + ("" if d["causal"] else "; no causal mask")
        if d["ignore_index"] is not None:
            context += f"; ignore_index {d['ignore_index']}"
        if d["batch"] == 1:
            context += "; batch 1" + (
                f", accumulation {d['accumulation']}" if (d["accumulation"] or 1) > 1 else ""
            )
        if res is None:
            status = rec.get("status", "not run")
            lines.append(
                f"| {row['name']} | {d['model']} | {d['weights']} | {d['token']} | "
                f"{d['layers']} | {context} | {status} ||||||| |"
            )
            continue
        recall, f1, peak = res.get("test_recall"), res.get("test_macro_f1"), res.get("peak_gib")
        lines.append(
            f"| {row['name']} | {d['model']} | {d['weights']} | {d['token']} | {d['layers']} | "
            f"{context} | {_pct(res.get('train_acc'))} | {_pct(res.get('val_acc'))} | "
            f"{_pct(res.get('test_acc'))} | {'' if recall is None else f'{recall:.4f}'} | "
            f"{'' if f1 is None else f'{f1:.4f}'} | {res['seconds'] / 60:.2f} min | "
            f"{'' if peak is None else f'{peak:.2f} GiB'} | {device} |"
        )
    book = [row for row in rows if "book" in row]
    if book:
        lines += [
            "",
            "The book's published figures for its rows (pretrained GPT-2, the book's "
            "balanced split, 5 epochs, batch 8, A100):",
            "",
            "| row | model | token position | trainable layers | context length | "
            "train acc | val acc | test acc | time |",
            "|" + "---|" * 9,
        ]
        for row in book:
            n, b = row["book_row"], row["book"]
            d = describe(row["flags"], None)
            lines.append(
                f"| {n} | {d['model']} | {BOOK_TOKEN.get(n, 'last')} | "
                f"{d['layers']} | "
                f"{BOOK_CONTEXT.get(n, 'longest train ex. (120)')} | {b['train_acc']:.2f}% | "
                f"{b['val_acc']:.2f}% | {b['test_acc']:.2f}% | {b['minutes']:.2f} min |"
            )
    return "\n".join(lines) + "\n"
