"""The data settings of a run (``DataConfig``): which file, which columns, how it is split
and encoded; each field is a flag of ``experiments.finetune``."""

from __future__ import annotations

import dataclasses
import math

from gpt2_jax.data import tables
from gpt2_jax.data.chunks import CHUNK_POOLS, LONG_TEXTS, MAX_CHUNKS, Chunking, check_long_texts
from gpt2_jax.data.encoding import TRUNCATIONS, check_truncate
from gpt2_jax.util.typed import check_field_types

field = dataclasses.field


def _size(text: str) -> int | float:
    """A split size: a count (``500``, ``0``) or a fraction of the rows (``0.1``); a
    number written with a point or an exponent is a fraction (``1.0`` is not one row)."""
    return int(text) if text.strip().lstrip("+-").isdigit() else float(text)


def _size_or_rest(text: str) -> int | float | str:
    """A size, or ``rest`` (``all``, the lab's old word, means the same)."""
    return "rest" if text in ("rest", "all") else _size(text)


def _length(text: str) -> int | str:
    return text if text in ("longest", "context") else int(text)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the labelled texts come from and how they are split and encoded."""

    data_file: str | None = field(
        default=None,
        metadata={
            "help": "labelled texts: CSV/TSV with a header, JSON Lines, Parquet, or the SMS "
            "Spam Collection (default: the SMS collection, downloaded into DATA_DIR)"
        },
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "metavar": "NAME_OR_PATH[:CONFIG]",
            "help": "labelled texts from a Hugging Face datasets dataset instead of a file: a Hub "
            "name, a local folder of data files, or a folder written by save_to_disk (its "
            "train / validation / test splits are used; see docs/huggingface.md)",
        },
    )
    dataset_split: str | None = field(
        default=None,
        metadata={
            "metavar": "SPLIT",
            "help": "with --dataset: read only this split (e.g. train, train[:80%%]) and cut "
            "train / validation / test from it as from a file",
        },
    )
    data_format: str = field(
        default="auto",
        metadata={
            "flag": "--format",
            "choices": ["auto", *tables.FORMATS],
            "help": "auto: by the file's extension (SMSSpamCollection: sms)",
        },
    )
    quoting: str = field(
        default="pandas",
        metadata={
            "choices": list(tables.SMS_QUOTING),
            "help": "SMS format only: 'pandas' reads as the lab does (a message starting with a "
            "quote runs on to the next quote; every such join is logged), 'none' takes one "
            "message per line",
        },
    )
    text_column: str = field(default="text", metadata={"help": "column holding the text"})
    label_column: str = field(default="label", metadata={"help": "column holding the class"})
    multi_label: bool = field(
        default=False,
        metadata={
            "help": "several labels per text: the label is a set (a JSON list, names between "
            "--label-sep, or --label-columns); sigmoid outputs, one per label (--label-sep and "
            "--label-columns imply it)"
        },
    )
    label_sep: str | None = field(
        default=None,
        metadata={
            "metavar": "SEP",
            "help": "the label cell holds several names between SEP (e.g. ';'); an empty cell "
            "is a text with no label",
        },
    )
    label_columns: str | None = field(
        default=None,
        metadata={
            "metavar": "A,B,...",
            "help": "one 0/1 column per label (instead of --label-column), named in order",
        },
    )
    labels: str = field(
        default="sorted",
        metadata={
            "metavar": "sorted|A,B,...",
            "help": "class order (class ids): 'sorted' = integer "
            "labels in numeric order, other labels in string order; or the names in order",
        },
    )
    val_file: str | None = field(
        default=None,
        metadata={"help": "validation texts from their own file (then --val-size is not cut)"},
    )
    test_file: str | None = field(
        default=None,
        metadata={"help": "test texts from their own file (then --test-size is not cut)"},
    )
    train_size: int | float = field(
        default=2000,
        metadata={"parse": _size, "help": "training rows: a count or a fraction (0.8)"},
    )
    val_size: int | float = field(default=500, metadata={"parse": _size})
    test_size: int | float | str = field(
        default=1000,
        metadata={
            "parse": _size_or_rest,
            "help": "a count, a fraction, or 'rest' (every row after training and validation)",
        },
    )
    stratify: bool = field(
        default=False,
        metadata={"help": "cut every split with the class proportions of the whole file"},
    )
    balance: bool = field(
        default=False,
        metadata={"help": "undersample every class to the rarest one before splitting"},
    )
    drop_duplicates: bool = field(
        default=False,
        metadata={
            "help": "leave out of validation and test the rows whose text is also a training "
            "(or, for test, a validation) text; the run counts such rows either way"
        },
    )
    max_length: int | str = field(
        default="longest",
        metadata={
            "parse": _length,
            "metavar": "longest|context|N",
            "help": "pad/truncate to the longest training text, the model's context, or N tokens",
        },
    )
    truncate: str = field(
        default="head",
        metadata={
            "choices": list(TRUNCATIONS),
            "help": "what a text longer than --max-length keeps: its first tokens (the "
            "lab's), its last, or the first half and the last half; saved with the classifier",
        },
    )
    long_texts: str = field(
        default="truncate",
        metadata={
            "choices": list(LONG_TEXTS),
            "help": "a text longer than --max-length is truncated (--truncate), or cut into "
            "overlapping chunks whose pooled features are combined (--chunk-pool) before the "
            "head: one prediction per text either way (docs/own-data.md, Long documents)",
        },
    )
    chunk_length: int | None = field(
        default=None,
        metadata={"parse": int, "help": "with --long-texts chunk: tokens per chunk "
                  "(default: the run's max length)"},
    )  # fmt: skip
    stride: int | None = field(
        default=None,
        metadata={"parse": int, "help": "with --long-texts chunk: tokens from one chunk's "
                  "start to the next (default: half the chunk length)"},
    )  # fmt: skip
    chunk_pool: str = field(
        default="mean",
        metadata={"choices": list(CHUNK_POOLS), "help": "with --long-texts chunk: how a "
                  "text's chunks are combined (per feature, before the head)"},
    )  # fmt: skip
    max_chunks: int = field(
        default=MAX_CHUNKS,
        metadata={"help": "with --long-texts chunk: chunks a text yields at most (its first "
                  "ones; the rest is left out and counted, as truncation is)"},
    )  # fmt: skip
    data_dir: str = field(
        default="data", metadata={"help": "download cache for the SMS Spam Collection"}
    )

    def __post_init__(self):
        labels = self.labels
        if isinstance(labels, (list, tuple)) and all(isinstance(x, str) for x in labels):
            object.__setattr__(self, "labels", ",".join(labels))  # the Python API's natural form
        if isinstance(self.label_columns, (list, tuple)):
            object.__setattr__(self, "label_columns", ",".join(self.label_columns))
        check_field_types(self)
        if self.label_sep == "" or self.label_columns in ("",):
            raise ValueError("label_sep and label_columns must not be empty")
        self._check_dataset()
        if isinstance(self.test_size, str) and self.test_size != "rest":
            raise ValueError(
                f"test_size must be a count, a fraction or 'rest', got {self.test_size!r}"
            )
        for name in ("train_size", "val_size", "test_size"):
            value = getattr(self, name)
            if isinstance(value, float) and not (math.isfinite(value) and 0 < value < 1):
                raise ValueError(f"{name} must be a count or a fraction in (0, 1), got {value}")
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if isinstance(self.max_length, int) and self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        check_truncate(self.truncate)
        check_long_texts(self.long_texts)
        self._check_chunking()
        if isinstance(self.max_length, str) and self.max_length not in ("longest", "context"):
            raise ValueError(
                f"max_length must be 'longest', 'context' or a number, got {self.max_length!r}"
            )

    def is_multi_label(self) -> bool:
        """Several labels per text (``--multi-label``, implied by its two ways of writing)."""
        return self.multi_label or self.label_sep is not None or self.label_columns is not None

    def _check_dataset(self) -> None:
        if self.dataset is None:
            if self.dataset_split is not None:
                raise ValueError("--dataset-split names a split of --dataset; give --dataset too")
            return
        given = [
            flag
            for flag, value in (
                ("--data-file", self.data_file),
                ("--val-file", self.val_file),
                ("--test-file", self.test_file),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"--dataset reads every split from the dataset; drop {' and '.join(given)}"
            )

    def _check_chunking(self) -> None:
        """The chunking flags, checked before anything is read."""
        for name in ("chunk_length", "stride", "max_chunks"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.long_texts == "chunk" and self.is_multi_label():
            raise ValueError(
                "--long-texts chunk is for one label per text; several labels per text "
                "(--multi-label, --label-sep, --label-columns) are read with --long-texts "
                "truncate for now"
            )
        if self.long_texts == "chunk" and self.truncate != "head":
            raise ValueError(
                f"--truncate {self.truncate} is for --long-texts truncate; chunked texts keep "
                "their first --max-chunks chunks"
            )
        if self.chunk_length and self.stride and self.stride > self.chunk_length:
            raise ValueError(
                f"--stride {self.stride} > --chunk-length {self.chunk_length} would skip the "
                "tokens between chunks; use a stride of at most the chunk length"
            )

    def chunking(self, length: int) -> Chunking | None:
        """How texts are chunked when the run's max length is ``length`` (None: they are
        truncated): ``--chunk-length`` (default ``length``), ``--stride`` (default half)."""
        if self.long_texts != "chunk":
            return None
        size = self.chunk_length or length
        return Chunking(size, self.stride or max(1, size // 2), self.chunk_pool, self.max_chunks)

    def class_order(self) -> tuple[str, ...] | None:
        return None if self.labels == "sorted" else tuple(self.labels.split(","))

    def cut_sizes(
        self, rows: int, cut_val: bool, cut_test: bool
    ) -> tuple[int | float, int | float, int | float | None]:
        """``(train, val, test)`` sizes for cutting ``rows`` rows: a split that comes
        from elsewhere (its own file, the dataset's own split) gets 0; ``test`` None is
        the rest; with neither cut, a fractional --train-size trains on every row."""
        test_size = None if self.test_size == "rest" else self.test_size
        assert not isinstance(test_size, str)  # DataConfig allows no other word
        train_size = self.train_size
        if not (cut_val or cut_test) and isinstance(train_size, float):
            train_size = rows  # validation and test come from elsewhere: train on all
        return train_size, self.val_size if cut_val else 0, test_size if cut_test else 0

    def holdout_row(self) -> int | None:
        """Where validation and test are cut from the shuffle: with the default
        --val-size and --test-size, at the default train size's row (the lab's layout),
        whatever --train-size, so runs that change only that test on the same rows;
        otherwise (None) right after the training rows, as in stratified cuts."""
        default = {f.name: f.default for f in dataclasses.fields(DataConfig)}
        sizes = ("val_size", "test_size")
        if self.stratify or any(getattr(self, k) != default[k] for k in sizes):
            return None
        train = default["train_size"]
        assert isinstance(train, int)
        return train
