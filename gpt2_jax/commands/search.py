"""Search fine-tuning settings with Optuna: each trial is one run of the trainable tail.

    python -m experiments.search --out searches/sms --trials 20 \\
        --search lr=1e-5:1e-3:log --search epochs=2:6 --search class_weights=balanced,none \\
        -- --data-file sms.csv --text-column text --label-column label

Flags after ``--`` are the fine-tuning flags of ``python -m experiments.finetune`` (or of
``experiments.spam`` with ``--base spam``), shared by every trial; ``--config RUN`` starts
from a saved run's settings. Trials are sampled by TPE and pruned (median rule) after an
epoch whose validation score trails the earlier trials'. The frozen prefix is kept in
OUT/prefix-cache, so trials that freeze the same blocks compute it once.

The study lives in OUT/study.db (or ``--storage``): the same command run again goes on
with the same study until it has ``--trials`` finished trials, and several workers may
run it at once. A trial whose worker was killed or stopped is marked failed and its
settings are tried once more as a new trial. After every trial OUT/config.json (the best
trial's settings: ``experiments.finetune --config OUT/config.json`` reruns it),
OUT/trials.csv, OUT/trials.md, OUT/history.png and OUT/importance.png are rewritten.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from gpt2_jax.commands.grid_process import restore_signals, stop_signals
from gpt2_jax.commands.presets import PRESETS
from gpt2_jax.commands.search_space import Param, parse_space
from gpt2_jax.finetune.cli import add_config_flags, config_from_args
from gpt2_jax.finetune.config import RunConfig, load_config
from gpt2_jax.training.config import SELECT_BY, SELECT_BY_MULTI_LABEL

METRICS = tuple(m for m in SELECT_BY + SELECT_BY_MULTI_LABEL if m != "last")


def parser(defaults: RunConfig | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--out", default="searches/search", help="the search's folder")
    p.add_argument(
        "--search",
        action="append",
        metavar="NAME=SPEC",
        help="a setting to search: NAME=LOW:HIGH, NAME=LOW:HIGH:log, NAME=LOW:HIGH:STEP or "
        "NAME=A,B,C (repeat the flag)",
    )
    p.add_argument("--space", metavar="FILE", help="the search space as JSON {name: spec}")
    p.add_argument("--trials", type=int, default=20, help="finished trials the study needs")
    p.add_argument("--study-name", default="search", help="the study's name in the storage")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument(
        "--metric",
        choices=METRICS,
        help="what a trial scores, on validation, at the epoch it keeps (default: the "
        "runs' --select-by, else val_macro_f1); the val_micro_f1, val_subset_accuracy and "
        "val_hamming_loss of a multi-label run too; val_loss and val_hamming_loss are "
        "minimized, the others maximized",
    )
    p.add_argument(
        "--pruner",
        choices=["median", "none"],
        default="median",
        help="median: end a trial after an epoch whose validation score is worse than the "
        "median of the earlier trials' at that epoch",
    )
    p.add_argument(
        "--prune-after", type=int, default=5, help="finished trials before pruning starts"
    )
    p.add_argument(
        "--startup-trials", type=int, default=10, help="random trials before TPE takes over"
    )
    p.add_argument("--sampler-seed", type=int, help="repeatable sampling (one worker)")
    p.add_argument("--base", choices=["finetune", "spam"], default="finetune")
    p.add_argument("--verbose", action="store_true", help="show each run's log as well")
    p.add_argument("--config", metavar="FILE", help="start from a saved run's settings")
    if defaults is not None:
        add_config_flags(p, defaults)
    return p


def read_args(argv: list[str]) -> tuple[argparse.Namespace, RunConfig, list[Param]]:
    """The search's flags, the base run config (``--`` flags on top of ``--config`` or
    the base command's defaults) and the space; a mistake exits 2 with one line."""
    shared: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, shared = argv[:cut], argv[cut + 1 :]
    p = parser()
    args = p.parse_args(argv)
    try:
        defaults = load_config(args.config) if args.config else PRESETS[args.base]
    except (OSError, ValueError, TypeError) as err:
        p.error(str(err))
    run_p = argparse.ArgumentParser(prog="flags after --", allow_abbrev=False)
    add_config_flags(run_p, defaults)
    try:
        base = config_from_args(run_p.parse_args(shared), defaults)
        if base.data.data_file is None and args.base == "finetune":
            raise ValueError("give the runs' --data-file after -- (the SMS lab: --base spam)")
        space = parse_space(args.search, args.space)
    except (ValueError, TypeError) as err:
        p.error(str(err))
    for flag, value, least in (
        ("--trials", args.trials, 1),
        ("--startup-trials", args.startup_trials, 0),
        ("--prune-after", args.prune_after, 0),
    ):
        if value < least:
            p.error(f"{flag} must be at least {least}, got {value}")
    return args, base, space


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, base, space = read_args(argv)
    from gpt2_jax.commands.search_study import Search
    from gpt2_jax.util.compile_cache import use_compile_cache
    from gpt2_jax.util.logs import configure_terminal
    from gpt2_jax.util.runtime import quiet_native_logs

    quiet_native_logs(False)  # before TensorFlow is imported (reading OpenAI's files)
    use_compile_cache(True)
    configure_terminal(main=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metric = args.metric or (base.train.select_by if base.train.select_by != "last" else None)
    previous = stop_signals()
    started, search = time.perf_counter(), None
    try:
        search = Search(out, base, space, args, metric or "val_macro_f1")
        search.optimize()
    except KeyboardInterrupt as err:
        print(f"search stopped ({err or 'Ctrl-C'}); the same command goes on", flush=True)
        return 130
    except (OSError, ValueError, RuntimeError, FloatingPointError) as err:
        print(f"error: {(str(err).splitlines() or [type(err).__name__])[0]}", file=sys.stderr)
        return 1
    finally:
        restore_signals(previous)
        if search is not None:
            search.report()
        logging.shutdown()
    print(search.summary(time.perf_counter() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
