"""A Hugging Face ``datasets`` dataset read into the standard frames of ``data.tables``.

``read_dataset("NAME_OR_PATH[:CONFIG]", split, text_column, label_column)`` loads a
folder written by ``save_to_disk`` (``datasets.load_from_disk``), or anything
``datasets.load_dataset`` loads (a Hub name, a local folder of CSV / JSON / Parquet
files, the library's cache; ``HF_DATASETS_OFFLINE=1`` reads the cache only). Every cell
is checked as a file's cells are (``data.cells``), so a dataset and the same rows in a
CSV file give the same frames; only ``where`` differs ("imdb train row 5").

Which rows are what: with ``split`` given, that split (``load_dataset``'s slices such
as ``train[:80%]`` included) is the one table, cut into train / validation / test as a
file is. Without it, a dataset with a ``train`` split trains on it and takes validation
from ``validation`` (or ``valid``, ``val``, ``dev``) and test from ``test`` where it has
them (the rest is cut from train, as with ``--val-file`` / ``--test-file``); a dataset
with one split only is that table. A ``ClassLabel`` label column gives the class names
(its ids become names) and their order.

``datasets`` is imported only here, and only when a dataset is read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gpt2_jax.data.budget import Budget
from gpt2_jax.data.cells import check_cells
from gpt2_jax.data.records import Problems

INSTALL = "reading --dataset needs the datasets library: pip install gpt2_jax[datasets]"
VAL_NAMES = ("validation", "valid", "val", "dev")


@dataclass
class DatasetTables:
    """``table``: the rows to train on (cut as a file is); ``given``: ``val`` / ``test``
    frames from the dataset's own splits; ``splits``: the split each one came from
    (``{"train": "train", "val": "validation", ...}``); ``classes``: the ClassLabel
    names in id order (None: the labels are plain names or integers); ``sums``: a
    SHA-256 of each frame's texts and labels (for ``--resume``)."""

    source: str
    table: pd.DataFrame
    given: dict[str, pd.DataFrame] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    sums: dict[str, str] = field(default_factory=dict)


def read_dataset(
    spec: str, split: str | None, text_column: str = "text", label_column: str = "label"
) -> DatasetTables:
    """The standard frames of dataset ``spec`` (``NAME_OR_PATH[:CONFIG]``); see the
    module docstring. Every problem is one ValueError naming the dataset and split."""
    if text_column == label_column:
        raise ValueError(
            f"--dataset {spec}: text and label column are both {text_column!r}; name two "
            "different columns with --text-column and --label-column"
        )
    loaded = _load(spec, split)
    chosen = _choose(spec, loaded, split)
    out = DatasetTables(spec, pd.DataFrame())
    columns = (text_column, label_column)
    for role, (name, ds) in chosen.items():
        frame, classes = _frame(f"{spec} split {name}", ds, columns)
        out.splits[role] = name
        out.sums[role] = _sha256(frame)
        if role == "train":
            out.table, out.classes = frame, classes
        else:
            out.given[role] = frame
    return out


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError(INSTALL) from None
    return datasets


def _load(spec: str, split: str | None) -> Any:
    """A ``Dataset`` (one table) or ``DatasetDict`` (named splits)."""
    datasets = _datasets()
    name, config = split_spec(spec)
    folder = Path(name)
    try:
        if folder.is_dir() and any(
            (folder / f).is_file() for f in ("dataset_dict.json", "state.json")
        ):
            if config:
                raise ValueError(f"{name} was written by save_to_disk; it has no configs")
            return _disk_split(spec, datasets.load_from_disk(str(folder)), split)
        return datasets.load_dataset(name, config or None, split=split)
    except ImportError:
        raise
    except Exception as err:  # the library's errors are of many kinds; one line for each
        message = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"--dataset {spec}: {message}") from None


def split_spec(spec: str) -> tuple[str, str]:
    """``NAME_OR_PATH[:CONFIG]`` -> (name or path, config or ""); a colon followed by a
    path separator belongs to the path."""
    name, colon, config = spec.rpartition(":")
    if not colon or not name or "/" in config or "\\" in config:
        return spec, ""
    return name, config


def _disk_split(spec: str, loaded: Any, split: str | None) -> Any:
    if split is None:
        return loaded
    if not hasattr(loaded, "keys"):
        raise ValueError(f"{spec} is one table without splits; drop --dataset-split")
    if split not in loaded:
        raise ValueError(f"no split {split!r} (splits: {', '.join(loaded)}); fix --dataset-split")
    return loaded[split]


def _choose(spec: str, loaded: Any, split: str | None) -> dict[str, tuple[str, Any]]:
    """``{"train": (split name, Dataset), "val": ..., "test": ...}``: the roles the
    dataset's splits take (see the module docstring)."""
    if not hasattr(loaded, "keys"):  # one table
        return {"train": (split or "all", loaded)}
    names = list(loaded.keys())
    if "train" not in names:
        if len(names) == 1:
            return {"train": (names[0], loaded[names[0]])}
        raise ValueError(
            f"--dataset {spec}: no 'train' split (splits: {', '.join(names)}); name the one "
            "to train on with --dataset-split (validation and test are then cut from it)"
        )
    chosen = {"train": ("train", loaded["train"])}
    val = next((n for n in VAL_NAMES if n in names), None)
    if val is not None:
        chosen["val"] = (val, loaded[val])
    if "test" in names:
        chosen["test"] = ("test", loaded["test"])
    return chosen


READ_ROWS = 4096  # rows of a split read at a time


def _pairs(ds: Any, columns: tuple[str, str]):
    """``(text, label)`` of every row, ``READ_ROWS`` rows at a time (not whole columns)."""
    for start in range(0, len(ds), READ_ROWS):
        part = ds[start : start + READ_ROWS]
        yield from zip(part[columns[0]], part[columns[1]])


def _frame(
    where: str, ds: Any, columns: tuple[str, str]
) -> tuple[pd.DataFrame, tuple[str, ...] | None]:
    """The standard frame of one split, every cell checked, and its ClassLabel names."""
    present = list(ds.column_names)
    flags = ("--text-column", "--label-column")
    missing = [(c, f) for c, f in zip(columns, flags) if c not in present]
    if missing:
        raise ValueError(
            f"--dataset {where}: "
            + " and ".join(f"no column {c!r}" for c, _ in missing)
            + f" (columns: {', '.join(map(repr, present)) or 'none'}); name the right one with "
            + " / ".join(f for _, f in missing)
        )
    names = _class_names(ds.features[columns[1]])
    pairs = _pairs(ds, columns)  # read in slices: the budget stops a split too large
    path = Path(where)
    problems, budget = Problems(path, "fill in or remove these rows"), Budget(path)
    places, cells = [], []
    for number, (text, label) in enumerate(pairs, start=1):
        place = f"row {number}"
        if names is not None and isinstance(label, int):
            if not 0 <= label < len(names):
                unlabelled = (
                    " (-1: unlabelled, as in some test splits; --dataset-split train cuts all "
                    "three splits from train instead)"
                    if label == -1
                    else ""
                )
                problems.add(
                    f"{place}, column {columns[1]!r}: class id {label} has no name{unlabelled}"
                )
                continue
            label = names[label]
        checked = check_cells(problems, place, columns, text, label)
        if checked is not None:
            budget.keep(place, checked)
            places.append(f"{where} {place}")
            cells.append(checked)
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()
    if not cells:
        raise ValueError(f"--dataset {where}: no rows")
    frame = pd.DataFrame(cells, columns=["text", "label"])
    frame["where"] = places
    return frame, names


def _class_names(feature: Any) -> tuple[str, ...] | None:
    if type(feature).__name__ != "ClassLabel":
        return None
    return tuple(str(n) for n in feature.names)


def _sha256(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for text, label in zip(frame["text"], frame["label"]):
        digest.update(f"{len(text)}:{text}{len(label)}:{label}".encode())
    return digest.hexdigest()
