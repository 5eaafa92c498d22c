"""Classes and splits: the class order decided once, class ids on any frame, and the shuffled, optionally balanced or stratified cut into training, validation and test rows."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

_INTEGER = re.compile(r"-?[0-9]+")  # an integer label as written (ASCII digits only)


def class_names(
    labels: Iterable[str],
    explicit: Sequence[str] | None = None,
    *,
    where: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The class order (index = class id) for the labels of the training data.

    ``explicit`` (names, e.g. from the command line) is used as is; it may name classes
    the data lacks, but must name every label present and none twice. Otherwise the
    rule is: if every label is an integer (``"-1"``, ``"3"``, ``"10"``) they are in
    numeric order ("1", "2", "10"), else in Python's string order (so "ham" = 0,
    "spam" = 1, as in the lab). ``where`` (the frame's ``where`` column) lets an error
    say where a label occurs. At least two different labels must be present.
    """
    labels = list(labels)
    where = list(where) if where is not None else None
    if not all(isinstance(label, str) for label in labels):
        raise ValueError("labels must be strings (a standard frame's 'label' column)")
    present = list(dict.fromkeys(labels))  # first-appearance order, for messages
    if len(present) < 2:
        if not present:
            raise ValueError("no labelled rows; a classifier needs at least two classes")
        raise ValueError(
            f"every row is labelled {present[0]!r}; a classifier needs at least two classes"
        )
    if explicit is None:
        if all(_INTEGER.fullmatch(label) for label in present):
            return tuple(sorted(present, key=lambda s: (int(s), s)))
        return tuple(sorted(present))
    names = tuple(explicit)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"class names must be strings, got {bad!r}")
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(
            f"the class list {list(names)} names {', '.join(map(repr, doubled))} more than once"
        )
    missing = [label for label in present if label not in names]
    if missing:
        first = f" (first at {where[labels.index(missing[0])]})" if where is not None else ""
        raise ValueError(
            f"the class list {list(names)} lacks the label(s) "
            f"{', '.join(map(repr, missing))} of the data{first}; add them"
        )
    return names


def add_class_ids(df: pd.DataFrame, classes: Sequence[str], what: str = "training") -> pd.DataFrame:
    """A copy of ``df`` with ``y`` (int32, index into ``classes``); ``classes`` is also
    kept in ``df.attrs["classes"]`` for messages. A label outside ``classes`` is an
    error naming its row: "test.csv line 5: label 'x' does not occur in the training
    data (classes: ...)"; ``what`` names where the classes came from."""
    classes = tuple(classes)
    ids = df["label"].map({name: k for k, name in enumerate(classes)})
    unknown = ids.isna().to_numpy()
    if unknown.any():
        rows = np.flatnonzero(unknown)
        first = rows[0]
        place = df["where"].iloc[first] if "where" in df else f"row {first + 1}"
        more = (
            f" ({len(rows) - 1} more rows have labels outside the classes)" if len(rows) > 1 else ""
        )
        raise ValueError(
            f"{place}: label {df['label'].iloc[first]!r} does not occur in the "
            f"{what} data (classes: {', '.join(classes)}){more}"
        )
    out = df.copy()
    out["y"] = ids.to_numpy().astype(np.int32)
    out.attrs["classes"] = classes
    return out


def class_counts(y, k: int) -> np.ndarray:
    """Rows per class: ``[k]`` int64 from class ids ``y`` ``[N]`` (all in ``0..k-1``)."""
    y = np.asarray(y, np.int64)
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"class ids must be in 0..{k - 1}, got {y.min()}..{y.max()}")
    return np.bincount(y, minlength=k)


def _classes_of(df: pd.DataFrame) -> tuple[str, ...]:
    """Class names for messages: those ``add_class_ids`` left in ``attrs``, else ids."""
    classes = df.attrs.get("classes")
    if classes is None:
        k = int(df["y"].max()) + 1 if len(df) else 0
        classes = tuple(str(i) for i in range(k))
    return tuple(classes)


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    held_out_at: int | None = None  # shuffled row where validation starts (plain cuts)

    def items(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))


def balance_classes(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Undersample every class to the rarest one: a larger class is replaced by
    ``.sample(n_min, random_state=seed)`` of its rows, a class of ``n_min`` rows is kept
    whole, and the classes are concatenated by id (``y``) ascending. For ham/spam this
    is the book's ``pd.concat([ham.sample(len(spam), random_state=seed), spam])``."""
    groups = [df[df["y"] == k] for k in np.unique(df["y"])]  # classes present, by id
    n_min = min(len(g) for g in groups)
    parts = [g.sample(n_min, random_state=seed) if len(g) > n_min else g for g in groups]
    out = pd.concat(parts).reset_index(drop=True)
    out.attrs = dict(df.attrs)  # concat keeps attrs only in some pandas versions
    return out


def _row_count(size, n: int, name: str) -> int:
    """Rows meant by a split size: an int count, or a float in (0, 1) = that fraction of
    the ``n`` rows, rounded to the nearest count (halves up)."""
    if isinstance(size, (bool, np.bool_)):
        raise ValueError(f"{name} size must be a count or a fraction in (0, 1), got {size!r}")
    if isinstance(size, (int, np.integer)):
        if size < 0 or (name == "train" and size == 0):
            raise ValueError(f"split sizes must be positive: {name} size {size}")
        return int(size)
    if isinstance(size, (float, np.floating)) and 0 < size < 1:
        return int(math.floor(size * n + 0.5))
    raise ValueError(f"{name} size must be a count or a fraction in (0, 1), got {size!r}")


def split(
    df: pd.DataFrame,
    train_size: int | float,
    val_size: int | float,
    test_size: int | float | None,
    seed: int = 123,
    balance: bool = False,
    stratify: bool = False,
    holdout_at: int | None = None,
) -> Splits:
    """Train / validation / test frames from ``df`` (which needs ``y``: ``add_class_ids``).

    Sizes are row counts, or floats in (0, 1) = fractions of the rows (after balancing,
    see ``balance_classes``); ``test_size=None`` takes every row after validation.
    The rows are shuffled once with ``df.sample(frac=1, random_state=seed)``. Without
    ``stratify`` the splits are consecutive slices of the shuffled frame (the lab's
    way). With ``stratify`` each class's rows, in shuffled order, are cut in proportion
    (see ``stratified_counts``), so every split has about the class proportions of the
    whole and at least one row of each class; each split keeps the shuffled order.

    ``holdout_at`` (plain cuts with a test size only): validation and test start at this
    row of the shuffle, or as far in as they fit (``n - val - test``), whatever the train
    size; training takes the rows before them and, if it needs more, those after test.
    So runs that differ only in ``train_size`` validate and test on the same rows. None:
    validation starts right after training (``holdout_at == train_size`` is the same cut).
    """
    if "y" not in df:
        raise ValueError("the frame has no class ids 'y'; add them with add_class_ids first")
    if balance:
        df = balance_classes(df, seed)
    classes = _classes_of(df)
    n = len(df)
    a, b = _row_count(train_size, n, "train"), _row_count(val_size, n, "val")
    c = n - a - b if test_size is None else _row_count(test_size, n, "test")
    if a + b + c > n or c < 0:
        after = " after balancing the classes" if balance else ""
        raise ValueError(
            f"train {a} + val {b} + test {test_size if c < 0 else c} = "
            f"{a + b + max(c, 0)} rows wanted, but the data has only {n}{after}"
        )
    shuffled = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    if stratify:
        counts = stratified_counts(class_counts(shuffled["y"], len(classes)), [a, b, c], classes)
        return _cut_by_class(shuffled, counts)
    start = a if holdout_at is None or test_size is None else min(holdout_at, n - b - c)
    train = shuffled.iloc[:a] if start == a else _train_around(shuffled, a, start, b + c)
    held = class_counts(train["y"], len(classes))
    if (held == 0).any():
        lacking = ", ".join(repr(classes[k]) for k in np.flatnonzero(held == 0))
        raise ValueError(
            f"the {a} training rows hold no row of class {lacking} (rows per "
            f"class: {dict(zip(classes, held.tolist()))}); use a larger train "
            "size, or a stratified split"
        )
    val, test = shuffled.iloc[start : start + b], shuffled.iloc[start + b : start + b + c]
    return Splits(train, val, test, start)


def _train_around(shuffled: pd.DataFrame, a: int, start: int, held: int) -> pd.DataFrame:
    """``a`` training rows of the shuffle around the ``held`` rows from ``start``: those
    before it, then (if more are needed) those after the held-out block."""
    after = start + held
    rows = np.r_[0 : min(a, start), after : after + max(0, a - start)]
    return shuffled.iloc[rows]


def stratified_counts(
    per_class: np.ndarray, sizes: Sequence[int], classes: Sequence[str] | None = None
) -> np.ndarray:
    """Rows of each class in each split: ``[S, K]`` int64 for ``per_class`` ``[K]`` rows
    of each class and ``sizes`` ``[S]`` (the splits in order; row s sums to sizes[s]).

    Split by split, from the rows still left (``left[k]``, ``R`` in all), class k's
    quota is ``size * left[k] / R``; each class first gets the floor of its quota, at
    least 1 (every non-empty split holds every class) and at most ``left[k]`` minus one
    for each later non-empty split; then rows are added to the class furthest below its
    quota (or taken from the one furthest above) until the split has its size, ties
    going to the lower class id. Deterministic, and within about one row of exact.
    """
    left = np.asarray(per_class, np.int64).copy()
    k = len(left)
    classes = tuple(classes) if classes is not None else tuple(str(i) for i in range(k))
    busy = [s for s in sizes if s > 0]
    for s in busy:
        if s < k:
            raise ValueError(
                f"a stratified split of {s} rows cannot hold one row of each of "
                f"the {k} classes; make every split at least {k} rows"
            )
    short = [(classes[j], int(left[j])) for j in range(k) if left[j] < len(busy)]
    if short:
        names = ", ".join(f"{name!r} has {rows}" for name, rows in short)
        raise ValueError(
            f"a stratified split puts at least one row of each class in each "
            f"of the {len(busy)} non-empty splits, but class {names} row(s); "
            "add rows of that class, or split without stratify"
        )
    out = np.zeros((len(sizes), k), np.int64)
    for i, size in enumerate(sizes):
        if size == 0:
            continue
        later = sum(1 for s in sizes[i + 1 :] if s > 0)
        quota = size * left / left.sum()
        low, high = np.ones(k, np.int64), left - later
        take = np.clip(np.floor(quota).astype(np.int64), low, high)
        while take.sum() < size:  # argmax/argmin take the first: ties to the lower id
            take[int(np.argmax(np.where(take < high, quota - take, -np.inf)))] += 1
        while take.sum() > size:
            take[int(np.argmin(np.where(take > low, quota - take, np.inf)))] -= 1
        out[i] = take
        left -= take
    return out


def _cut_by_class(shuffled: pd.DataFrame, counts: np.ndarray) -> Splits:
    """Splits from ``counts`` [3, K]: the first ``counts[0, k]`` rows of class k (in
    shuffled order) go to train, the next ``counts[1, k]`` to val, and so on; rows left
    over are dropped. Each split keeps the shuffled order."""
    y = shuffled["y"].to_numpy()
    rank = shuffled.groupby("y").cumcount().to_numpy()  # position within its class
    ends = np.cumsum(counts, axis=0)  # [3, K]: where each split stops, per class
    which = (rank[:, None] >= ends[:, y].T).sum(axis=1)  # 0 train, 1 val, 2 test, 3 unused
    train, val, test = (shuffled[which == s] for s in range(3))
    return Splits(train, val, test)
