"""Everything a run reads, fingerprinted when it starts (each data file, the backbone's files,
the config), so that ``--resume`` goes on only with the same inputs and names whatever changed.

The checkpoints already refuse other training rows or other frozen weights; this also covers
the validation and test files (a changed test file would mix two test sets in one history),
the backbone's files as bytes, and a config edited in ``metrics.json`` by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gpt2_jax.util.files import file_sha256


def input_fingerprints(
    files: dict[str, str],
    model_dir: Path | None,
    config: dict[str, Any],
    known: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``{"data": {split: {"file", "sha256"}}, "backbone": {"folder", "files": {name:
    sha256}}, "config": sha256}``; a split read from the same file as another is hashed once.
    ``known``: the sums of sources that are not files (a dataset's splits), by name."""
    sums: dict[str, str] = dict(known or {})
    data = {}
    for split, name in files.items():
        if name not in sums:
            sums[name] = file_sha256(name)
        data[split] = {"file": name, "sha256": sums[name]}
    backbone: dict[str, Any] = {"folder": None if model_dir is None else str(model_dir)}
    if model_dir is not None and model_dir.is_dir():
        backbone["files"] = {
            p.name: file_sha256(p) for p in sorted(model_dir.iterdir()) if p.is_file()
        }
    return {"data": data, "backbone": backbone, "config": config_sha256(config)}


def config_sha256(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two ``input_fingerprints``, one phrase each (empty: nothing)."""
    said = []
    for split, was in before.get("data", {}).items():
        is_ = now["data"].get(split)
        if is_ is None or is_["file"] != was["file"]:
            said.append(f"the {split} data is read from another file than {was['file']}")
        elif is_["sha256"] != was["sha256"]:
            said.append(f"the {split} data file {was['file']} has other contents")
    was_model, is_model = before.get("backbone", {}), now["backbone"]
    old_files, new_files = was_model.get("files", {}), is_model.get("files", {})
    folder = was_model.get("folder")
    for name in sorted(set(old_files) | set(new_files)):
        if old_files.get(name) != new_files.get(name):
            what = (
                "is gone"
                if name not in new_files
                else "is new"
                if name not in old_files
                else "has other contents"
            )
            said.append(f"the backbone's file {Path(folder or '.') / name} {what}")
    if "config" in before and before["config"] != now["config"]:
        said.append("the config in metrics.json was edited")
    return said


def check_unchanged(before: dict[str, Any] | None, now: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume the run in ``run_dir`` when its inputs changed, naming each change.
    ``before`` None: the run started before inputs were fingerprinted (nothing to compare)."""
    if before is None:
        return
    said = changes(before, now)
    if said:
        raise ValueError(
            f"--resume {run_dir}: " + "; ".join(said) + " since the run started. Put the "
            "original back to resume, or start a new run (without --resume) on the new inputs"
        )
