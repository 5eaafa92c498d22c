"""Run the book's classification experiments (or your own rows) one after another and
rebuild their table.

    python -m experiments.grid --out grids/book -- --model-dir models/124M
    python -m experiments.grid --rows 1,2,16 --out grids/quick -- --train-size 160 --epochs 1

Each row is one run of ``python -m experiments.spam`` (or ``--base finetune``) with the
row's flags after the flags given after ``--`` (shared by every row). Runs go to
OUT/<row>/; all rows share one frozen-prefix cache (OUT/prefix-cache), so rows with the
same frozen blocks compute them once. The grid can be stopped at any time and started
again with the same command: a row that finished with the same command is not run again.
After every row OUT/grid.md and OUT/grid.json are rewritten: the book's columns (model,
weights, token position, trainable layers, context length, train/val/test accuracy,
time, device) plus spam recall and macro-F1, and beside them the book's published
figures for its rows (measured by the book on its own data split and GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from gpt2_jax.finetune.record import METRICS_FILE, RunRecord
from gpt2_jax.util.machine import machine_name

# The book's rows (LLMs-from-scratch, ch06/02_bonus_additional-experiments) in this
# project's flags, with the figures the book publishes for them (pretrained weights,
# its balanced split, 5 epochs, batch 8, on an A100).
BOOK_ROWS = [
    # row, flags, (train acc, val acc, test acc, minutes)
    (1, [], (96.63, 99.33, 95.00, 0.28)),
    (2, ["--pool", "first"], (78.46, 80.54, 75.00, 0.28)),
    (3, ["--trainable", "last_layer"], (78.65, 79.87, 72.00, 0.25)),
    (4, ["--trainable", "last_two_blocks"], (98.85, 98.66, 98.33, 0.33)),
    (5, ["--trainable", "all"], (99.62, 96.64, 96.67, 0.69)),
    (6, ["--model-size", "355M"], (87.50, 91.28, 84.67, 0.75)),
    (7, ["--model-size", "774M"], (99.52, 98.66, 96.67, 1.50)),
    (8, ["--model-size", "1558M"], (99.81, 99.81, 98.33, 2.83)),
    (9, ["--model-size", "1558M", "--trainable", "all"], (100.00, 98.66, 98.67, 8.12)),
    (10, ["--weights", "random", "--trainable", "all"], (100.00, 96.64, 93.67, 0.69)),
    # LoRA: the book scales the adapters by alpha, this project by alpha / rank (the
    # LoRA paper's convention), so the book's alpha 16 and 8 at rank 16 are 256 and 128
    (
        11,
        ["--trainable", "lora", "--lora-rank", "16", "--lora-alpha", "256"],
        (100.00, 97.32, 96.67, 0.75),
    ),
    (
        12,
        [
            "--model-size",
            "1558M",
            "--trainable",
            "lora",
            "--lora-rank",
            "16",
            "--lora-alpha",
            "128",
        ],
        (100.00, 98.66, 98.33, 5.79),
    ),
    (13, ["--max-length", "context"], (83.08, 87.92, 78.33, 2.46)),
    (14, ["--batch-size", "1", "--pool", "last-real"], (100.00, 98.66, 98.00, 1.75)),
    (
        15,
        ["--batch-size", "1", "--accumulation-steps", "8", "--pool", "last-real"],
        (99.33, 98.66, 98.33, 1.70),
    ),
    (16, ["--pool", "last-real"], (99.42, 98.66, 98.33, 0.30)),
    (17, ["--disable-causal-mask"], (99.23, 98.66, 95.33, 0.29)),
    (18, ["--ignore-index", "50256"], (96.63, 99.33, 95.00, 0.28)),
    (19, ["--pool", "mean"], (97.79, 99.33, 96.33, 0.32)),
]
BOOK_CONTEXT = {
    13: "context length (1024)",
    14: "no padding (batch 1)",
    15: "no padding (batch 1, accumulation 8)",
    16: "flexible (last real token)",
    17: "longest; no causal mask",
    18: "longest; ignore_index for padding",
}
BOOK_TOKEN = {2: "first", 19: "last + pooled embeddings"}


def book_rows() -> list[dict]:
    return [
        {
            "name": f"{n:02d}",
            "book_row": n,
            "flags": flags,
            "book": dict(zip(("train_acc", "val_acc", "test_acc", "minutes"), figures)),
        }
        for n, flags, figures in BOOK_ROWS
    ]


def read_rows_file(path: Path) -> list[dict]:
    """Your rows: a JSON list of ``{"name": "...", "flags": ["--pool", "mean", ...]}``."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: --rows-file {path}: {err}") from None
    if not isinstance(rows, list):
        raise SystemExit(f"error: --rows-file {path}: expected a JSON list of rows")
    for i, row in enumerate(rows):
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("name"), str)
            and row["name"]
            and "/" not in row["name"]
            and isinstance(row.get("flags"), list)
            and all(isinstance(f, str) for f in row["flags"])
        )
        if not ok:
            raise SystemExit(
                f"error: --rows-file {path}: row {i} must be "
                '{"name": "NAME", "flags": ["--flag", "value", ...]} '
                f"(a name without '/'), got {row!r}"
            )
    names = [row["name"] for row in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: --rows-file {path}: row names repeat: {names}")
    return rows


def flag_value(flags: list[str], flag: str, default: str) -> str:
    """The last value given for ``flag`` in ``flags`` (as argparse reads it)."""
    value = default
    for i, item in enumerate(flags):
        if item == flag and i + 1 < len(flags):
            value = flags[i + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.grid",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="grids/book", help="folder of the grid's runs and table")
    p.add_argument("--rows", help="comma-separated book rows to run (default: all 19)")
    p.add_argument(
        "--rows-file",
        type=Path,
        help='your own rows instead: a JSON list of {"name": ..., "flags": [...]}',
    )
    p.add_argument(
        "--sizes",
        default="124M",
        help="model sizes available here; rows needing another are not run (default: 124M)",
    )
    p.add_argument(
        "--base",
        choices=["spam", "finetune"],
        default="spam",
        help="the command each row runs: the lab (spam) or your data (finetune)",
    )
    return p


def selected_rows(p: argparse.ArgumentParser, args) -> list[dict]:
    """The rows to run: the book's (or ``--rows-file``'s), cut to ``--rows``."""
    rows = read_rows_file(args.rows_file) if args.rows_file else book_rows()
    if args.rows:
        try:
            wanted = {int(x) for x in args.rows.split(",") if x.strip()}
        except ValueError:
            p.error(f"--rows {args.rows!r}: expected book row numbers such as 1,2,16")
        unknown = sorted(wanted - {r.get("book_row") for r in rows})
        if unknown:
            p.error(f"--rows: no book row(s) {unknown} (rows are 1..{len(BOOK_ROWS)})")
        rows = [r for r in rows if r.get("book_row") in wanted]
    return rows


class Grid:
    """The grid's folder: each row's run, ``grid.json`` (what ran, so a rerun keeps
    finished rows) and ``grid.md`` (the table), rewritten after every row."""

    def __init__(self, out: Path, rows: list[dict], shared: list[str], base: str):
        self.out, self.rows, self.shared, self.base = out, rows, shared, base
        self.machine = machine_name()
        self.state_path = out / "grid.json"
        try:
            self.records = json.loads(self.state_path.read_text()).get("rows", {})
        except (OSError, ValueError):
            self.records = {}

    def save(self) -> None:
        for rec in self.records.values():
            if rec.get("result"):
                rec["result"] = {k: v for k, v in rec["result"].items() if k != "metrics"}
        state = {"machine": self.machine, "shared_flags": self.shared, "rows": self.records}
        self.state_path.write_text(json.dumps(state, indent=2))
        # figures only for rows this command ran or kept; a failed or skipped row shows why
        shown = {
            name: {
                **rec,
                "result": result_of(self.out / name)
                if rec.get("returncode") == 0 or rec.get("kept")
                else None,
            }
            for name, rec in self.records.items()
        }
        device = self.machine.split(",")[0]
        (self.out / "grid.md").write_text(
            f"Machine: {self.machine}\n\nShared flags: "
            f"`{' '.join(self.shared) or '(none)'}`\n\n"
            + table(self.rows, shown, device, self.shared)
        )

    def command(self, row: dict) -> list[str]:
        run_dir = self.out / row["name"]
        return [
            sys.executable,
            "-m",
            f"experiments.{self.base}",
            *self.shared,
            *row["flags"],
            "--run-dir",
            str(run_dir),
            "--prefix-cache-dir",
            str(self.out / "prefix-cache"),
        ]

    def kept(self, row: dict, cmd: list[str]) -> bool:
        """A row that finished earlier with this very command is kept, not rerun. The
        command is written before a row starts, so a kill between the run's end and the
        grid's own record still finds the row finished with it."""
        name, run_dir = row["name"], self.out / row["name"]
        try:
            earlier = json.loads((self.out / f"{name}.command.json").read_text())
        except (OSError, ValueError):
            earlier = None
        if earlier != cmd[1:] or result_of(run_dir) is None:
            return False
        print(f"row {name}: finished earlier, kept", flush=True)
        record = self.records.get(name, {})
        self.records[name] = {
            **record,
            "command": cmd[1:],
            "flags": row["flags"],
            "kept": True,
            "result": result_of(run_dir),
        }
        return True

    def run_row(self, row: dict, cmd: list[str]) -> None:
        name, run_dir = row["name"], self.out / row["name"]
        (self.out / f"{name}.command.json").write_text(json.dumps(cmd[1:]))
        if run_dir.exists():
            cmd = [*cmd, "--overwrite"]  # an interrupted or different earlier try
        print(f"row {name}: {' '.join(row['flags']) or '(the lab)'} ...", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        (self.out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        record = {
            "command": [c for c in cmd[1:] if c != "--overwrite"],
            "flags": row["flags"],
            "returncode": proc.returncode,
            "wall_seconds": time.perf_counter() - started,
        }
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            record["status"] = f"failed: {last[:120]}"
            print(f"  failed ({self.out / f'{name}.log'}): {last}", flush=True)
        else:
            record["result"] = result_of(run_dir)
            print(f"  done in {record['wall_seconds']:.0f} s", flush=True)
        self.records[name] = record


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    shared = []
    if "--" in argv:
        cut = argv.index("--")
        argv, shared = argv[:cut], argv[cut + 1 :]
    p = parser()
    args = p.parse_args(argv)
    rows = selected_rows(p, args)
    sizes = {s.strip() for s in args.sizes.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = Grid(out, rows, shared, args.base)
    for row in rows:
        size = flag_value(shared + row["flags"], "--model-size", "124M")
        cmd = grid.command(row)
        if size not in sizes:
            grid.records[row["name"]] = {"status": f"not run: needs the {size} model (--sizes)"}
        elif not grid.kept(row, cmd):
            grid.run_row(row, cmd)
        grid.save()
    grid.save()
    print((out / "grid.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
