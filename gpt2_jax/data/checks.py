"""Checks across rows and splits that no single cell shows: labels that are one class
spelled several ways, and texts that occur in more than one split."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpt2_jax.data.splits import Splits

_INTEGER_SPELLING = re.compile(r"([+-]?)([0-9]+)(?:\.0*)?")  # 1, 01, +1, 1.0, 1.


def label_key(label: str) -> str:
    """``label`` as the collision check compares it: surrounding whitespace dropped,
    case folded, an integer spelling (``01``, ``+1``, ``1.0``) as its decimal value."""
    key = label.strip().casefold()
    match = _INTEGER_SPELLING.fullmatch(key)
    return str(int(match[1] + match[2])) if match else key


def _is_integer(key: str) -> bool:
    return _INTEGER_SPELLING.fullmatch(key) is not None


@dataclass(frozen=True)
class LabelCollisions:
    """``groups``: labels that differ only in case, surrounding whitespace or integer
    spelling (first-appearance order); ``ids`` / ``names``: the integer and the other
    labels of a column that mixes both (empty when it does not)."""

    groups: tuple[tuple[str, ...], ...]
    ids: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.groups or self.ids)


def label_collisions(labels: Iterable[str]) -> LabelCollisions:
    """The collisions among ``labels`` (see ``LabelCollisions``)."""
    present = list(dict.fromkeys(labels))
    by_key: dict[str, list[str]] = {}
    for label in present:
        by_key.setdefault(label_key(label), []).append(label)
    groups = tuple(tuple(g) for g in by_key.values() if len(g) > 1)
    ids = tuple(label for label in present if _is_integer(label_key(label)))
    if not ids or len(ids) == len(present):
        return LabelCollisions(groups)
    names = tuple(label for label in present if label not in ids)
    return LabelCollisions(groups, ids, names)


def check_labels(
    labels: Sequence[str],
    where: Sequence[str] | None = None,
    *,
    explicit: Sequence[str] | None = None,
    source: str = "the data",
    column: str = "label",
) -> None:
    """Refuse, in one line naming ``source`` (the file) and ``column``, labels that
    collide (see ``label_collisions``), unless ``explicit`` (``--labels``) names the
    classes: then each spelling is a class because the user said so. ``where`` (the
    frame's ``where`` column) places each label's first row."""
    if explicit is not None:
        return
    labels = list(labels)
    found = label_collisions(labels)
    if not found:
        return
    first: dict[str, str] = {}
    if where is not None:
        for label, place in zip(labels, where):
            first.setdefault(label, place)

    def named(group: Sequence[str]) -> str:
        return ", ".join(repr(g) + (f" ({first[g]})" if g in first else "") for g in group)

    parts = [f"{named(g)} differ only in case, spaces or integer spelling" for g in found.groups]
    if found.ids:
        ids, names = (", ".join(map(repr, x[:5])) for x in (found.ids, found.names))
        parts.append(f"the column mixes integer ids ({ids}) and names ({names})")
    raise ValueError(
        f"{source}, column {column!r}: " + "; ".join(parts) + "; each spelling would be a "
        "class of its own: correct the file, or name every class in order with --labels "
        "(e.g. --labels " + ",".join(dict.fromkeys(labels)) + ") to keep them apart"
    )


@dataclass(frozen=True)
class PairOverlap:
    """Rows of split ``second`` whose text (exactly) is also a text of split ``first``;
    ``texts``: how many different texts that is."""

    first: str
    second: str
    rows: int
    texts: int


@dataclass(frozen=True)
class DuplicateReport:
    """Exact duplicate texts between train/val, train/test and val/test."""

    pairs: tuple[PairOverlap, ...]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.pairs)

    def line(self) -> str:
        """For the log: "texts shared between splits: train/val 3 rows (2 texts), ..."."""
        said = ", ".join(
            f"{p.first}/{p.second} {p.rows} rows ({p.texts} texts)" for p in self.pairs
        )
        return f"texts shared between splits: {said}"

    def as_dict(self) -> dict:
        """For metrics.json: {"train/val": {"rows": 3, "texts": 2}, ...}."""
        return {f"{p.first}/{p.second}": {"rows": p.rows, "texts": p.texts} for p in self.pairs}


def duplicate_texts(splits: Splits) -> DuplicateReport:
    """How many rows of each later split repeat a text of each earlier split."""
    frames = dict(splits.items())
    pairs = []
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        known = set(frames[first]["text"])
        shared = frames[second]["text"][frames[second]["text"].isin(known)]
        pairs.append(PairOverlap(first, second, len(shared), shared.nunique()))
    return DuplicateReport(tuple(pairs))


def drop_duplicate_texts(splits: Splits) -> tuple[Splits, dict[str, int]]:
    """``splits`` without the validation rows whose text is a training text and the test
    rows whose text is a training or (kept) validation text, and the rows dropped per
    split. Training is left whole. An evaluation split left empty is an error."""
    seen = set(splits.train["text"])
    out, dropped = {}, {}
    for name, frame in (("val", splits.val), ("test", splits.test)):
        repeat = frame["text"].isin(seen).to_numpy()
        if len(frame) and repeat.all():
            raise ValueError(
                f"every one of the {len(frame)} {name} rows repeats an earlier split's "
                "text; dropping them would leave none: use other data for it"
            )
        out[name], dropped[name] = frame[~repeat], int(repeat.sum())
        seen |= set(out[name]["text"])
    return dataclasses.replace(splits, **out), dropped


def count_duplicates(splits: Splits, drop: bool) -> tuple[Splits, DuplicateReport, dict[str, int]]:
    """The texts shared between splits counted (``duplicate_texts``) and, with ``drop``
    (``--drop-duplicates``), left out of validation and test: ``(splits, report,
    rows dropped per split)``."""
    report = duplicate_texts(splits)
    if not drop:
        return splits, report, {}
    kept, dropped = drop_duplicate_texts(splits)
    return kept, report, dropped
