"""Command-line flags made from the run's config dataclasses, so each setting is written once.

Every field of the groups of ``RunConfig`` becomes ``--field-name`` (or the field's
``metadata["flag"]``); its help, choices, metavar and parser come from the field's
metadata and its default from the dataclass (or from an entry point's preset, or from
``--config FILE``). On/off fields: a ``False`` default gives a switch that turns it
on, a ``True`` default a switch (named in ``flag``) that turns it off.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from gpt2_jax.finetune.config import RunConfig, load_config
from gpt2_jax.finetune.run import resume_config, run
from gpt2_jax.parallel.distributed import initialize, is_main
from gpt2_jax.util.compile_cache import FLAG_HELP, use_compile_cache
from gpt2_jax.util.logs import configure_terminal
from gpt2_jax.util.runtime import keep_freed_memory, quiet_native_logs


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except for on/off switches and unset options."""

    def _get_help_string(self, action):
        if isinstance(action.default, bool) or action.default is None:
            return action.help
        return super()._get_help_string(action)


def _groups():
    return [(f.name, type(f.default)) for f in dataclasses.fields(RunConfig)]


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def add_config_flags(p: argparse.ArgumentParser, defaults: RunConfig) -> None:
    for group_name, cls in _groups():
        g = p.add_argument_group(group_name, (cls.__doc__ or "").strip().split("\n")[0] or None)
        current = getattr(defaults, group_name)
        for f in dataclasses.fields(cls):
            meta, default = f.metadata, getattr(current, f.name)
            kwargs: dict[str, Any] = {"dest": f"{group_name}.{f.name}", "help": meta.get("help")}
            if isinstance(f.default, bool):  # --x / --no-x, whatever the preset default
                kwargs["help"] = f"{kwargs['help'] or ''} (default: {'on' if default else 'off'})"
                g.add_argument(
                    "--" + f.name.replace("_", "-"),
                    default=default,
                    action=argparse.BooleanOptionalAction,
                    **kwargs,
                )
                if (
                    meta.get("flag", f"--no-{f.name.replace('_', '-')}")
                    != f"--no-{f.name.replace('_', '-')}"
                ):  # the lab's older name for it
                    g.add_argument(
                        meta["flag"],
                        dest=kwargs["dest"],
                        action="store_false",
                        help=f"the same as --no-{f.name.replace('_', '-')}",
                    )
                continue
            metavar = meta.get("metavar", None if "choices" in meta else f.name.upper())
            if isinstance(f.default, tuple):
                kwargs.update(action="append", default=None, metavar=metavar)
                kwargs["help"] = (
                    kwargs["help"] or ""
                ) + f" (default: {' '.join(default) or 'none'})"
            else:
                parse = meta.get("parse") or (type(f.default) if f.default is not None else str)
                kwargs.update(type=parse, default=default, metavar=metavar)
                if "choices" in meta:
                    kwargs["choices"] = meta["choices"]
            g.add_argument(_flag(f), **kwargs)


def config_from_args(args: argparse.Namespace, defaults: RunConfig) -> RunConfig:
    groups = {}
    for group_name, cls in _groups():
        values = {}
        for f in dataclasses.fields(cls):
            value = getattr(args, f"{group_name}.{f.name}")
            if isinstance(f.default, tuple):
                value = tuple(value) if value else getattr(getattr(defaults, group_name), f.name)
            values[f.name] = value
        groups[group_name] = cls(**values)
    return RunConfig(**groups)


def parser(
    prog: str, description: str, epilog: str, defaults: RunConfig
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=_Help, allow_abbrev=False
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="start from a saved run's settings (its folder, config.json or "
        "metrics.json); flags given as well override them",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the Python traceback as well as the message; and "
        "TensorFlow's and XLA's informational start-up lines",
    )
    p.add_argument("--no-compile-cache", action="store_true", help=FLAG_HELP)
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="go on with an interrupted run from its last finished epoch, with the "
        "settings it started with (give no other flags); the result equals an "
        "uninterrupted run",
    )
    g = p.add_argument_group("several processes (jax.distributed; see the README)")
    g.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run, with the coordinator, process count and "
        "index from JAX's environment (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI)",
    )
    g.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="process 0's address; with --num-processes and --process-id",
    )
    g.add_argument("--num-processes", type=int, metavar="N")
    g.add_argument("--process-id", type=int, metavar="I")
    add_config_flags(p, defaults)
    return p


LAUNCH_FLAGS = (
    "--resume",
    "--debug",
    "--no-compile-cache",
    "--distributed",
    "--coordinator",
    "--num-processes",
    "--process-id",
)


def join_processes(p: argparse.ArgumentParser, args) -> None:
    """``jax.distributed`` from the launch flags, before anything touches JAX."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in explicit) and None in explicit:
        p.error("--coordinator, --num-processes and --process-id go together")
    if args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
        p.error(f"--process-id {args.process_id} must be in 0..{args.num_processes - 1}")
    if args.distributed or args.coordinator is not None:
        initialize(args.coordinator, args.num_processes, args.process_id)


def main(
    argv,
    *,
    prog: str,
    description: str,
    epilog: str,
    defaults: RunConfig,
    check: Callable[[RunConfig], None] | None = None,
) -> int:
    """Parse flags, build the RunConfig, run. Expected failures print one ``error:``
    line (and notes) and return 1; impossible flags exit 2 through argparse. A stop
    (Ctrl-C, SIGTERM) returns 130; when ``argv`` is ``None`` (this is the program's
    own command line) the process ends there at once (``end_now``)."""
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    p = parser(prog, description, epilog, defaults)
    args = p.parse_args(argv)
    quiet_native_logs(args.debug)  # before TensorFlow is imported (reading OpenAI's files)
    if args.config is not None:
        try:
            defaults = load_config(args.config)
        except (FileNotFoundError, ValueError, TypeError) as err:
            p.error(str(err))
        p = parser(prog, description, epilog, defaults)
        args = p.parse_args(argv)
    if args.resume is not None:
        given = [a for a in argv if a.startswith("--") and a.split("=")[0] not in LAUNCH_FLAGS]
        if given:
            p.error(f"--resume takes the settings the run started with; drop {' '.join(given)}")
    try:
        cfg = config_from_args(args, defaults) if args.resume is None else None
        if cfg is not None and check is not None:
            check(cfg)
    except (ValueError, TypeError) as err:  # impossible combinations, before any heavy work
        p.error(str(err))
    use_compile_cache(not args.no_compile_cache)  # before anything compiles
    try:
        join_processes(p, args)
        configure_terminal(main=is_main())  # progress on stdout; other processes: warnings only
        if cfg is None:
            cfg = resume_config(args.resume)
        run(cfg, resume=args.resume is not None)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: run() has recorded where it stopped
        _explain(err, "stopped", args.debug)
        if program:
            end_now(130)
        return 130
    except (OSError, ValueError, RuntimeError, FloatingPointError, ImportError) as err:
        _explain(err, "error", args.debug)
        return 1
    return 0


def end_now(code: int) -> None:
    """End the process with ``code`` once its output is flushed, without the interpreter's
    shutdown: that waits for every computation already queued on the device (a stop in
    the frozen-prefix pass of a large model left minutes of it). Whatever must outlive
    the stop (metrics.json, the run log, checkpoints, the folder lock) is settled by
    then: the run's ``finally`` blocks ran before the interrupt reached here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _explain(err: BaseException, word: str, debug: bool) -> None:
    """One line (plus the notes that say where the last good state is) on stderr."""
    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    text = str(err) or ("interrupted" if isinstance(err, KeyboardInterrupt) else type(err).__name__)
    print(f"{word}: {text}", file=sys.stderr)
    for note in getattr(err, "__notes__", []):
        print(f"       {note}", file=sys.stderr)
