"""Compile once per machine: JAX's persistent compilation cache for the command lines.

Each command (``experiments.spam``, ``finetune``, ``classify``, ``serve``, ``export``, and
so the rows of ``grid``) calls :func:`use_compile_cache` before its first compile.
XLA's programs then go to a folder and the next process on the machine loads them
instead of compiling again (a 124M ``classify`` of one text: about 3.5 s of XLA
compilation cold, 0.4 s to load it warm, on a 2-core Xeon).

The folder: ``GPT2_JAX_COMPILE_CACHE`` when set (``off`` switches the cache off), else
``$XDG_CACHE_HOME/gpt2_jax/jax``, else ``~/.cache/gpt2_jax/jax``; in it, one subfolder
per CPU (model and instruction-set flags), since XLA compiles for the CPU it runs on and
a home folder may be shared by different machines. JAX's own settings win where the
user made them: ``JAX_COMPILATION_CACHE_DIR`` (the folder),
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` (the threshold), and
``JAX_ENABLE_COMPILATION_CACHE=false`` (off). The cache is trusted code: keep the folder
writable by you alone. Deleting it is safe (the next run compiles again).

The Python API (``Classifier``, ``run``) leaves JAX's settings to the caller.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

from gpt2_jax.util.machine import cpu_identity

CACHE_VAR = "GPT2_JAX_COMPILE_CACHE"
OFF_VALUES = frozenset({"off", "0", "false", "no", "none"})
# Programs that compile faster than this are not written (JAX's default: 1 s). Measured on
# the lab's second run at 124M (docs/speed.md): with 0.5 s the warm cache held 8 of its 51
# programs and the run still spent 4.8 s compiling; with 0.1 s it held 17 and spent 1.3 s,
# for 0.25 MB more on disk.
MIN_COMPILE_SECS = 0.1
FLAG_HELP = (
    f"compile everything afresh: no reading or writing of the compilation cache "
    f"(~/.cache/gpt2_jax/jax, or ${CACHE_VAR}; {CACHE_VAR}=off does the same)"
)


def compile_cache_root(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The cache folder named by the environment (before the per-CPU subfolder), or
    None where ``GPT2_JAX_COMPILE_CACHE`` switches it off."""
    own = environ.get(CACHE_VAR, "").strip()
    if own.lower() in OFF_VALUES:
        return None
    if own:
        return Path(own).expanduser()
    base = environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "gpt2_jax" / "jax"


def compile_cache_folder(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where this machine's compiled programs go: the root and a subfolder per CPU."""
    root = compile_cache_root(environ)
    if root is None:
        return None
    digest = hashlib.sha256(cpu_identity().encode()).hexdigest()[:12]
    return root / f"cpu-{digest}"


def use_compile_cache(
    enabled: bool = True, min_compile_secs: float = MIN_COMPILE_SECS
) -> Path | None:
    """Switch JAX's persistent compilation cache on (the folder above) or, when not
    ``enabled`` or ``GPT2_JAX_COMPILE_CACHE=off``, off. Call it before the first compile
    (a later call only affects programs compiled after it). Programs that compile in less
    than ``min_compile_secs`` are not written (the server writes all: its warm-up is a
    few dozen small ones). Returns the folder in use, or None. A folder that cannot be
    made is one warning line, and no cache."""
    import jax

    folder = compile_cache_folder() if enabled else None
    if folder is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    # the user's own JAX settings win (read from the environment: jax.config may hold what
    # an earlier call in this process set)
    if os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "").lower() in ("0", "false", "no", "off"):
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    own = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if own:
        jax.config.update("jax_compilation_cache_dir", own)
        _report_damaged_entries(Path(own))
        return Path(own)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        print(
            f"warning: compilation cache {folder}: {err.strerror or err}; compiling "
            f"afresh (set {CACHE_VAR} to a folder you can write, or to off)",
            file=sys.stderr,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    _report_damaged_entries(folder)
    return folder


DAMAGED = "Error reading persistent compilation cache entry"  # JAX's UserWarning


def _report_damaged_entries(folder: Path) -> None:
    """JAX warns, with its own source line, for every cache entry it cannot read, on
    every run (it compiles the program again but leaves the entry): say it once, in one
    line, with what to do."""
    shown = warnings.showwarning
    if getattr(shown, "_gpt2_jax_cache", None) == folder:
        return
    shown = getattr(shown, "_gpt2_jax_inner", shown)  # replace an earlier one, not wrap it
    said = False

    def show(message, category, filename, lineno, file=None, line=None):
        nonlocal said
        if issubclass(category, UserWarning) and str(message).startswith(DAMAGED):
            if not said:
                said = True
                why = str(message).partition(": ")[2] or str(message)
                print(
                    f"warning: compilation cache {folder}: an entry cannot be read ({why}); "
                    "its program is compiled afresh each run: delete the folder to rebuild it",
                    file=sys.stderr,
                )
            return
        shown(message, category, filename, lineno, file, line)

    show._gpt2_jax_cache = folder  # type: ignore[attr-defined]
    show._gpt2_jax_inner = shown  # type: ignore[attr-defined]
    warnings.showwarning = show
