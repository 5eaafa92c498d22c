"""Parquet files: read whole through pandas for training (``parquet_rows``, as
``data.tables`` reads every format), or a batch of rows at a time through pyarrow for the
texts of ``classify --input`` (``ParquetColumns``): what stays in memory then is one row
group's text column at most, checked against the data budget (``data.budget``) from the
file's metadata before anything is read. Either way each row's cells are checked
(``checked_rows``) and named by their row number, from 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from gpt2_jax.data.budget import check_read_at_once
from gpt2_jax.data.cells import CellCheck, check_cells
from gpt2_jax.data.records import Problems, require_columns

BATCH_ROWS = 4096  # rows converted to Python values at a time
# memory per uncompressed byte of a row group's column while pyarrow holds it decoded
# (its values and offsets; the Python strings exist only for one batch of rows)
ARROW_FACTOR = 1.5


def has_pyarrow() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


class ParquetColumns:
    """An open Parquet file: its column names (``names``) and, after ``check_budget``,
    the values of chosen columns row by row (``values``, which closes the file at the
    end)."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path = path
        self.file = pq.ParquetFile(path)  # a file that is not Parquet: pyarrow's ValueError
        self.names = list(self.file.schema_arrow.names)

    def check_budget(self, columns: tuple[str, ...], memory_budget: int | None = None) -> None:
        """Refuse, before reading, a file whose largest row group would take more than the
        budget for these columns (a row group is the least pyarrow reads at once)."""
        meta = self.file.metadata
        paths = [meta.schema.column(i).path for i in range(meta.num_columns)]
        leaves = [  # the leaf columns under these names (a struct or a list has its own)
            i for i, path in enumerate(paths) if any(_under(path, c) for c in columns)
        ]
        largest = max(
            (
                sum(meta.row_group(g).column(i).total_uncompressed_size for i in leaves)
                for g in range(meta.num_row_groups)
            ),
            default=0,
        )
        what = (
            f"its largest row group takes about {{size}} ({_groups(meta.num_row_groups)}; "
            "rewriting it with smaller row groups also helps)"
        )
        check_read_at_once(self.path, int(largest * ARROW_FACTOR), what, memory_budget)

    def values(self, columns: tuple[str, ...]) -> Iterator[tuple]:
        """Each row's values of ``columns`` as Python objects (nulls as None)."""
        try:
            for batch in self.file.iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
                yield from zip(*(batch.column(c).to_pylist() for c in columns))
        finally:
            self.file.close()


def _under(path: str, column: str) -> bool:
    """Whether the leaf column at ``path`` ("a", "a.b", "a.list.element") is ``column``'s."""
    return path == column or path.startswith(column + ".")


def parquet_rows(
    path: Path, columns: tuple[str, ...], check: CellCheck = check_cells
) -> Iterator[tuple[str, tuple]]:
    """A parquet file through pandas (needs pyarrow or fastparquet); ``where`` counts
    rows from 1."""
    try:
        import pyarrow  # noqa: F401  (pandas' default engine)
    except ImportError:
        try:
            import fastparquet  # noqa: F401  (pandas' other engine)
        except ImportError:
            raise ImportError(
                f"reading {path.name} needs pyarrow: pip install 'gpt2_jax[parquet]'"
            ) from None
    table = pd.read_parquet(path)
    require_columns(path, [str(c) for c in table.columns], columns)
    values = zip(*(table[c].tolist() for c in columns))  # tolist: numpy scalars -> Python
    return checked_rows(path, values, columns, check)


def checked_rows(
    path: Path, values: Iterable[tuple], columns: tuple[str, ...], check: CellCheck
) -> Iterator[tuple[str, tuple]]:
    """``("row N", cells)`` of a Parquet file's ``values``, checked by ``check``."""
    problems = Problems(path, "fill in or remove these rows")
    for number, row in enumerate(values, start=1):
        checked = check(problems, f"row {number}", columns, *row)
        if checked is not None:
            yield f"row {number}", checked
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()


def _groups(n: int) -> str:
    return "1 group" if n == 1 else f"{n} groups"
