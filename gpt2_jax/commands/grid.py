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
import sys
import time
from pathlib import Path

from gpt2_jax.commands.grid_process import (
    last_line,
    restore_signals,
    resumable,
    run_child,
    stop_signals,
)
from gpt2_jax.commands.grid_rows import (
    BOOK_CONTEXT,
    BOOK_ROWS,
    BOOK_TOKEN,
    book_rows,
    flag_value,
    read_rows_file,
)
from gpt2_jax.commands.grid_table import describe, model_label, result_of, table
from gpt2_jax.util.machine import machine_name

__all__ = [  # names the tests import from here
    "BOOK_CONTEXT",
    "BOOK_ROWS",
    "BOOK_TOKEN",
    "book_rows",
    "describe",
    "flag_value",
    "main",
    "model_label",
    "read_rows_file",
    "result_of",
    "table",
]


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

    def earlier_command(self, name: str) -> list[str] | None:
        try:
            return json.loads((self.out / f"{name}.command.json").read_text())
        except (OSError, ValueError):
            return None

    def kept(self, row: dict, cmd: list[str]) -> bool:
        """A row that finished earlier with this very command is kept, not rerun. The
        command is written before a row starts, so a kill between the run's end and the
        grid's own record still finds the row finished with it."""
        name, run_dir = row["name"], self.out / row["name"]
        if self.earlier_command(name) != cmd[1:] or result_of(run_dir) is None:
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
        """Run the row: its earlier run goes on from its last saved epoch if it was
        stopped with this very command, else a fresh run. A stop of the grid stops the
        run (``grid_process``) and is raised again, the row recorded as stopped."""
        name, run_dir = row["name"], self.out / row["name"]
        log = self.out / f"{name}.log"
        started = time.perf_counter()
        record: dict = {"command": cmd[1:], "flags": row["flags"]}
        self.records[name] = {**record, "status": "stopped: resumes when the grid is rerun"}
        code = None
        if self.earlier_command(name) == cmd[1:] and resumable(run_dir):
            print(f"row {name}: resuming its stopped run ...", flush=True)
            code = run_child([*cmd[:3], "--resume", str(run_dir)], log, append=True)
            record["resumed"] = not code
            if code:
                print(f"  resuming failed ({last_line(log)}); starting it again", flush=True)
        if code is None or code:
            (self.out / f"{name}.command.json").write_text(json.dumps(cmd[1:]))
            fresh = [*cmd, "--overwrite"] if run_dir.exists() else cmd  # a different try
            print(f"row {name}: {' '.join(row['flags']) or '(the lab)'} ...", flush=True)
            code = run_child(fresh, log)
        record.update(returncode=code, wall_seconds=time.perf_counter() - started)
        if code:
            record["status"] = f"failed: {last_line(log)[:120]}"
            print(f"  failed ({log}): {last_line(log)}", flush=True)
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
    previous = stop_signals()
    try:
        run_rows(grid, rows, sizes)
    except KeyboardInterrupt as err:  # Ctrl-C, SIGTERM, SIGHUP: the row's run is stopped
        grid.save()
        print(f"grid stopped ({err or 'Ctrl-C'}); the same command goes on from here", flush=True)
        return 130
    finally:
        restore_signals(previous)
    grid.save()
    print((out / "grid.md").read_text())
    return 0


def run_rows(grid: Grid, rows: list[dict], sizes: set[str]) -> None:
    for row in rows:
        size = flag_value(grid.shared + row["flags"], "--model-size", "124M")
        cmd = grid.command(row)
        if size not in sizes:
            grid.records[row["name"]] = {"status": f"not run: needs the {size} model (--sizes)"}
        elif not grid.kept(row, cmd):
            grid.run_row(row, cmd)
        grid.save()


if __name__ == "__main__":
    sys.exit(main())
