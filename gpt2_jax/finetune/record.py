"""What a run records in ``metrics.json``: one typed record, written by ``run`` and read back
by ``--resume``, the grid and the served page through this class, so a key renamed here is
renamed for every reader (and mypy sees each use).

The file is the record's ``to_dict()``, keys in the order of the fields below; a field that
is ``None`` is left out (a dry run, ``--epochs 0``, has no ``seed``, ``parameters`` ...; a
run not yet finished has no ``selected`` or ``total_seconds``). Reading accepts a partial
record (older run folders, a run stopped early) and refuses, in one line naming the file and
the key, a key this version does not know or a value of the wrong type.

Each entry of ``epochs`` is one epoch's figures, as ``training.train.fit`` reports them:
``{"epoch": k, "train"|"val"|"test": {"loss", "accuracy", "n", "macro_f1", "per_class",
"confusion", ...}, "train_seconds", ...}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

# 1: the record as written since the lab (no version key); 2: the same keys plus this one;
# 3: plus ``fingerprints`` (an older reader would refuse the new key, so it is told to update);
# 4: plus ``machine``, label sets (multi-label data and decisions) and chunks (``data``);
# 5: plus ``compile_seconds``
RECORD_VERSION = 5
METRICS_FILE = "metrics.json"


@dataclasses.dataclass
class Selected:
    """The epoch whose weights the classifier keeps, and by which score (``value``)."""

    epoch: int
    by: str
    value: float | None = None


@dataclasses.dataclass
class RunRecord:
    """``metrics.json``. Types are checked on reading; ``None`` = not (yet) recorded."""

    run_dir: str | None = None
    config: dict[str, Any] | None = None  # RunConfig.to_dict()
    seed: int | None = None
    settings: dict[str, Any] | None = None  # the backbone's hparams (OpenAI's names)
    backbone: dict[str, Any] | None = None  # folder, and hf_repo/hf_commit from the Hub
    fingerprints: dict[str, Any] | None = None  # of the data files, backbone files, config
    model_config: dict[str, Any] | None = None  # GPTConfig as a dict
    data: dict[str, Any] | None = None  # files, rows, classes, splits, batches_per_epoch ...
    trainable_patterns: list[str] | None = None
    parameters: dict[str, int] | None = None  # {"trainable": n, "frozen": n}
    class_weights: list[float] | None = None
    backend: str | None = None
    machine: str | None = None  # the CPU and the devices it trained on (util.machine)
    prefix_storage: str | None = None  # "memory" or "disk"
    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    status: str = "running"  # "running", "finished", "checked: ...", "stopped: ..."
    resumed: list[dict[str, Any]] | None = None  # one entry per --resume
    selected: Selected | None = None
    decisions: dict[str, Any] | None = None  # --calibrate, --decision-threshold: fitted on val
    stopped_early: bool | None = None
    total_seconds: float | None = None
    compile_seconds: dict[str, Any] | None = None  # util.compile_clock.CompileTime
    peak_memory_gib: float | None = None
    record_version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Selected):
                value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str = METRICS_FILE) -> RunRecord:
        """The record in ``d`` (parsed JSON); a ValueError names ``where`` and the key."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: a JSON {type(d).__name__}, not a run's record (an object)")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {unknown}; not a metrics.json this version of "
                "gpt2_jax wrote"
            )
        version = d.get("record_version", 1)
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise ValueError(
                f"{where}: record_version {version!r} is newer than this gpt2_jax reads "
                f"({RECORD_VERSION}); update gpt2_jax"
            )
        values: dict[str, Any] = {}
        for key, value in d.items():
            if key == "selected" and value is not None:
                values[key] = _selected(value, where)
                continue
            _check_type(key, value, where)
            values[key] = value
        values["record_version"] = version
        return cls(**values)

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunRecord:
        """The record in the file ``path``; a damaged file is a ValueError naming it."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
        return cls.from_dict(d, str(path))


# the JSON type each key must have (None is accepted for every key: "not recorded")
_TYPES: dict[str, type | tuple[type, ...]] = {
    "run_dir": str,
    "config": dict,
    "seed": int,
    "settings": dict,
    "backbone": dict,
    "fingerprints": dict,
    "model_config": dict,
    "data": dict,
    "trainable_patterns": list,
    "parameters": dict,
    "class_weights": list,
    "backend": str,
    "machine": str,
    "prefix_storage": str,
    "epochs": list,
    "status": str,
    "resumed": list,
    "decisions": dict,
    "stopped_early": bool,
    "total_seconds": (int, float),
    "compile_seconds": dict,
    "peak_memory_gib": (int, float),
    "record_version": int,
}


def _check_type(key: str, value: Any, where: str) -> None:
    want = _TYPES[key]
    if value is None:
        return
    if isinstance(value, bool) and want in (int, (int, float)):
        raise ValueError(f"{where}: {key} is {value!r}, not a number")
    if not isinstance(value, want):
        raise ValueError(f"{where}: {key} is a JSON {type(value).__name__}, which is wrong here")
    if (
        isinstance(value, list)
        and key in ("epochs", "resumed")
        and not all(isinstance(e, dict) for e in value)
    ):
        raise ValueError(f"{where}: every entry of {key} must be a JSON object")


def _selected(value: Any, where: str) -> Selected:
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("epoch"), int)
        or not isinstance(value.get("by"), str)
        or set(value) - {"epoch", "by", "value"}
    ):
        raise ValueError(f"{where}: selected must be {{'epoch': int, 'by': str[, 'value']}}")
    return Selected(value["epoch"], value["by"], value.get("value"))
