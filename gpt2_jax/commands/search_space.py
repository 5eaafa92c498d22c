"""The search space of ``experiments.search``: which run settings a trial samples, and how.

Each parameter is a field of the run's config (``lr``, ``epochs``, ``class_weights``,
``lora_rank``, ...; dashes or underscores), given on the command line as
``--search NAME=SPEC`` or in a JSON file (``--space``). A SPEC is a range ``LOW:HIGH``
(``LOW:HIGH:log`` on a log scale, ``LOW:HIGH:STEP`` in steps; whole numbers for an
integer setting) or a list of choices ``A,B,C`` (each read like the flag's value). In
the file, a value is such a SPEC string, a list of choices, or
``{"low": .., "high": .., "log": true, "step": ..}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from gpt2_jax.finetune.config import RunConfig

_TRUE, _FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


def config_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every run setting by name: ``{field name: (group, field)}``."""
    fields = {}
    for group in dataclasses.fields(RunConfig):
        section: Any = type(group.default)  # every section's default is an instance of it
        for f in dataclasses.fields(section):
            fields[f.name] = (group.name, f)
    return fields


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched setting: a range (``low``, ``high``, ``log``, ``step``) or ``choices``."""

    name: str  # the config field
    group: str  # its section of RunConfig
    kind: str  # "int", "float" or "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The value the Optuna ``trial`` samples for this setting."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def _read_value(field: dataclasses.Field, text: str, where: str) -> Any:
    """One choice, read like the flag's value (a tuple setting: one pattern)."""
    default: Any = field.default
    try:
        if isinstance(default, bool):
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(f"expected on or off, got {text!r}")
            return text.lower() in _TRUE
        if isinstance(default, tuple):
            return text
        parse = field.metadata.get("parse") or (type(default) if default is not None else str)
        return parse(text)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _range(name: str, group: str, f: dataclasses.Field, spec: dict, where: str) -> Param:
    default, step, log = f.default, spec.get("step"), bool(spec.get("log", False))
    if isinstance(default, bool) or not isinstance(default, int | float):
        raise ValueError(f"{where}: {name} is not a number; give choices A,B,... instead")
    kind = "int" if isinstance(default, int) else "float"
    try:
        low, high = float(spec["low"]), float(spec["high"])
        step = None if step is None else float(step)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: a range needs numbers low and high") from None
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise ValueError(f"{where}: {name} is a whole number; give whole-number bounds")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{where}: the range needs LOW < HIGH, got {low:g}:{high:g}")
    if log and (low <= 0 or step is not None):
        raise ValueError(f"{where}: a log range needs LOW > 0 and no step")
    if step is not None and step <= 0:
        raise ValueError(f"{where}: the step must be positive")
    return Param(name, group, kind, low, high, log, step)


def _spec_dict(text: str, where: str) -> dict:
    """``LOW:HIGH[:log|:STEP]`` as a dict."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"{where}: expected LOW:HIGH, LOW:HIGH:log or LOW:HIGH:STEP")
    spec: dict[str, Any] = {"low": parts[0], "high": parts[1]}
    if len(parts) == 3:
        spec.update({"log": True} if parts[2] == "log" else {"step": parts[2]})
    return spec


def make_param(name: str, spec: Any, where: str) -> Param:
    """A parameter from its SPEC (a string, a list of choices or a range dict)."""
    fields = config_fields()
    key = name.strip().replace("-", "_")
    if key not in fields:
        raise ValueError(
            f"{where}: {name!r} is not a run setting (settings are the fine-tuning flags' "
            "names, such as lr, epochs, class_weights, lora_rank)"
        )
    group, f = fields[key]
    if isinstance(spec, str) and ":" in spec and "," not in spec:
        spec = _spec_dict(spec, where)
    elif isinstance(spec, str):
        spec = [s for s in spec.split(",") if s.strip()]
    if isinstance(spec, dict):
        return _range(key, group, f, spec, where)
    if not isinstance(spec, list) or len(spec) < 2:
        raise ValueError(f"{where}: give at least two choices (A,B) or a range LOW:HIGH")
    choices = tuple(
        _read_value(f, str(c).strip(), where) if isinstance(c, str) else c for c in spec
    )
    return Param(key, group, "choice", choices=choices)


def parse_space(flags: list[str] | None, space_file: str | None) -> list[Param]:
    """The parameters of ``--search NAME=SPEC`` flags and the ``--space`` file; a setting
    given twice is an error."""
    params: list[Param] = []
    if space_file is not None:
        try:
            d = json.loads(Path(space_file).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"--space {space_file}: {err}") from None
        if not isinstance(d, dict):
            raise ValueError(f"--space {space_file}: expected a JSON object {{name: spec}}")
        params += [make_param(k, v, f"--space {space_file}: {k}") for k, v in d.items()]
    for flag in flags or []:
        name, eq, spec = flag.partition("=")
        if not eq:
            raise ValueError(f"--search {flag}: expected NAME=SPEC, e.g. lr=1e-5:1e-3:log")
        params.append(make_param(name, spec, f"--search {flag}"))
    names = [p.name for p in params]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"the search space names {', '.join(twice)} more than once")
    if not params:
        raise ValueError("nothing to search: give --search NAME=SPEC (or --space FILE)")
    return params


def apply(base: RunConfig, params: list[Param], values: dict[str, Any]) -> RunConfig:
    """``base`` with the sampled ``values`` (checked as the run's config checks flags)."""
    groups: dict[str, dict[str, Any]] = {}
    for p in params:
        value = values[p.name]
        if isinstance(getattr(getattr(base, p.group), p.name), tuple):
            value = (value,)
        groups.setdefault(p.group, {})[p.name] = value
    return dataclasses.replace(
        base, **{g: dataclasses.replace(getattr(base, g), **v) for g, v in groups.items()}
    )
