"""The general data layer: readers (CSV, TSV, JSONL, parquet), class order and ids,
splits (plain, stratified, balanced, fractions), encoding and batching."""

import importlib.util
import json
import sys

import numpy as np
import pandas as pd
import pytest
from synthetic import labelled_frame, write_rows

from gpt2_jax.data import encoding
from gpt2_jax.data import splits as splitting
from gpt2_jax.data import tables as data

# A 3-class CSV whose quoted fields hold a comma, a tab, newlines (a blank line too)
# and doubled quotes; "extra" is a column the reader must ignore.
QUOTED_CSV = (
    "id,text,label,extra\n"  # line 1
    '1,"Hello, world",billing,x\n'  # line 2
    '2,"tab\there",bug,y\n'  # line 3
    '3,"line one\nline two\n\nline four",other,z\n'  # lines 4-7
    '4,"she said ""hi""",billing,\n'  # line 8
    "5,plain text,bug,w\n"  # line 9
)
QUOTED_ROWS = [
    ("Hello, world", "billing", 2),
    ("tab\there", "bug", 3),
    ("line one\nline two\n\nline four", "other", 4),
    ('she said "hi"', "billing", 8),
    ("plain text", "bug", 9),
]


def _write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


def _jsonl(path, records):
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


# --------------------------------------------------------------------------- CSV / TSV


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_quoted_fields_read_back_exactly_with_record_start_lines(tmp_path, newline):
    path = _write(tmp_path / "tickets.csv", QUOTED_CSV.replace("\n", newline))
    df = data.read_table(path)
    assert list(df.columns) == ["text", "label", "where"]
    want = [
        (t.replace("\n", newline), label, f"tickets.csv line {line}")
        for t, label, line in QUOTED_ROWS
    ]
    assert list(zip(df["text"], df["label"], df["where"])) == want
    # the same cells pandas reads with dtype=str, keep_default_na=False
    pandas = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert df["text"].tolist() == pandas["text"].tolist()
    assert df["label"].tolist() == pandas["label"].tolist()


def test_tsv_quoted_tab_and_plain_comma(tmp_path):
    path = _write(
        tmp_path / "t.tab", 'label\ttext\na\t"one\ttwo"\nb\tthree, four\n\na\t"x\ny"\nb\tlast\n'
    )
    df = data.read_table(path)
    assert df["text"].tolist() == ["one\ttwo", "three, four", "x\ny", "last"]
    assert df["where"].tolist() == [f"t.tab line {n}" for n in (2, 3, 5, 7)]


def test_csv_written_by_the_csv_module_round_trips(tmp_path):
    rows = [(f'row {i}, "quoted"\n\tend', str(i % 3)) for i in range(20)]
    df = data.read_table(write_rows(tmp_path / "r.csv", rows))
    assert list(zip(df["text"], df["label"])) == rows


@pytest.mark.parametrize(
    "body, message",
    [
        (
            'fine,a\n"never closed,b\nmore,c\nlast,a\n',
            r"b\.csv line 3: a quote opened here is never closed; a field that starts with \" "
            r"must end with \" right before a comma",
        ),
        (
            'fine,a\nok,b\n"quoted" tail,b\n',
            r"b\.csv line 4: ',' expected after '\"' \(on line 4\)",
        ),
        (
            'fine,a\n"opens here,b\nand closes",c,x\nlast,a\n',
            r"b\.csv line 3: 3 fields, but the header has 2 \(the record runs over lines 3-4: is a "
            r"quote not closed\?\)",
        ),
    ],
)
def test_a_broken_quote_is_reported_where_its_record_starts(tmp_path, body, message):
    path = _write(tmp_path / "b.csv", "text,label\n" + body)
    with pytest.raises(ValueError, match=message):
        data.read_table(path)


def test_a_long_unclosed_quote_is_not_a_field_size_error(tmp_path):
    # more than the csv module's default field limit (128 KiB) after the stray quote
    path = _write(tmp_path / "b.csv", 'text,label\nok,a\n"oops,b\n' + "x,a\n" * 40_000)
    with pytest.raises(ValueError, match=r"line 3: a quote opened here is never closed"):
        data.read_table(path)


def test_missing_columns_list_the_existing_ones_and_the_flags(tmp_path):
    path = write_rows(tmp_path / "c.csv", [("hi", "a"), ("yo", "b")], header=("body", "topic"))
    with pytest.raises(
        ValueError,
        match=r"c\.csv: no column 'text' and no column 'label' "
        r"\(columns: 'body', 'topic'\); name the right one with "
        r"--text-column / --label-column",
    ):
        data.read_table(path)
    with pytest.raises(
        ValueError,
        match=r"no column 'label' \(columns: 'body', 'topic'\); "
        r"name the right one with --label-column$",
    ):
        data.read_table(path, text_column="body")
    df = data.read_table(path, text_column="body", label_column="topic")
    assert df["text"].tolist() == ["hi", "yo"] and df["label"].tolist() == ["a", "b"]


def test_texts_only(tmp_path):
    path = write_rows(tmp_path / "p.csv", [("first",), ("second",)], header=("text",))
    df = data.read_table(path, label_column=None)
    assert list(df.columns) == ["text", "where"] and df["text"].tolist() == ["first", "second"]


def test_empty_cells_are_named_by_line_together(tmp_path):
    path = _write(tmp_path / "e.csv", "text,label\nok,a\n  ,b\nfine,a\nx, \nbad,row,here\n")
    message = str(pytest.raises(ValueError, data.read_table, path).value)
    assert message.startswith(f"{path}: 3 problems (fill in or remove these rows):")
    assert "\n  line 3, column 'text': empty text" in message
    assert "\n  line 5, column 'label': empty label" in message
    assert "\n  line 6: 3 fields, but the header has 2" in message
    one = _write(tmp_path / "one.csv", "text,label\nok,a\n,b\n")
    with pytest.raises(ValueError, match=r"one\.csv line 3, column 'text': empty text \(fill "):
        data.read_table(one)
    many = _write(tmp_path / "many.csv", "text,label\n" + ",a\n" * 20)
    message = str(pytest.raises(ValueError, data.read_table, many).value)
    assert message.count("\n  line ") == 5 and "stopped after the first ones" in message


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"empty file; expected a header row"),
        (b"text,label\n", r"no rows"),
        (b"text,label\nhi,\xe9t\xe9\n", r"x\.csv line 2, byte 4: 0xe9 is not UTF-8"),
        (b"text,text,label\na,b,c\n", r"names column 'text' 2 times"),
    ],
)
def test_other_bad_csv_files(tmp_path, content, message):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        data.read_table(path)


def test_a_non_utf8_byte_after_a_byte_order_mark_is_placed_as_an_editor_shows_it(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xef\xbb\xbftext,la\xffbel\nhi,a\n")
    with pytest.raises(ValueError, match=r"x\.csv line 1, byte 8: 0xff is not UTF-8"):
        data.read_table(path)


@pytest.mark.parametrize(
    "name, content",
    [
        ("b.csv", "\ufefftext,label\nhello,a\nbye,b\n"),
        ("b.tsv", "\ufefftext\tlabel\nhello\ta\nbye\tb\n"),
        ("b.jsonl", '\ufeff{"text": "hello", "label": "a"}\n{"text": "bye", "label": "b"}\n'),
        ("SMSSpamCollection", "\ufeffham\thello\nspam\tbye\n"),
    ],
)
def test_a_byte_order_mark_is_dropped(tmp_path, name, content):
    """Spreadsheet programs and Windows editors start UTF-8 files with U+FEFF; it must
    not become part of the first column name (CSV/TSV), JSON or label (SMS)."""
    df = data.read_table(_write(tmp_path / name, content))
    assert df["text"].tolist() == ["hello", "bye"]
    assert df["label"].tolist() in (["a", "b"], ["ham", "spam"])
    header = name.endswith((".csv", ".tsv"))
    assert df["where"].iloc[0] == f"{name} line {2 if header else 1}"


def test_sms_quoting_is_checked_for_every_format(tmp_path):
    path = write_rows(tmp_path / "a.csv", [("a", "x"), ("b", "y")])
    assert len(data.read_table(path, sms_quoting="none")) == 2  # only the "sms" format uses it
    with pytest.raises(ValueError, match="unknown SMS quoting 'off'"):
        data.read_table(path, sms_quoting="off")


def test_format_by_extension_and_forced(tmp_path):
    path = write_rows(tmp_path / "notes.txt", [("a", "x"), ("b", "y")])
    with pytest.raises(
        ValueError,
        match=r"notes\.txt: extension '\.txt', so the format is "
        r"unknown; supported: \.csv, \.tsv, \.tab, \.jsonl, "
        r"\.ndjson, \.parquet, or a file named SMSSpamCollection;"
        r" use --format \{sms,csv,tsv,jsonl,parquet\}",
    ):
        data.read_table(path)
    assert data.read_table(path, fmt="csv")["label"].tolist() == ["x", "y"]
    assert data.guess_format("A.CSV") == "csv" and data.guess_format("d/SMSSpamCollection") == "sms"
    with pytest.raises(ValueError, match="no extension"):
        data.guess_format("README")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        data.read_table(path, fmt="xml")
    with pytest.raises(FileNotFoundError, match="data file not found"):
        data.read_table(tmp_path / "absent.csv")


# --------------------------------------------------------------------------- JSONL


def test_jsonl_integer_labels_in_numeric_order(tmp_path):
    path = _write(
        tmp_path / "n.jsonl",
        "".join(
            [
                '{"text": "ten", "label": 10}\n',
                "\n",  # blank lines are skipped
                '{"text": "two", "label": 2, "x": 1}\n',
                '{"text": "one", "label": 1}\n',
                "   \n",
                '{"text": "two again", "label": "2"}\n',
            ]
        ),
    )
    df = data.read_table(path)
    assert df["label"].tolist() == ["10", "2", "1", "2"]
    assert df["where"].tolist() == [f"n.jsonl line {n}" for n in (1, 3, 4, 6)]
    assert splitting.class_names(df["label"]) == ("1", "2", "10")
    assert splitting.add_class_ids(df, ("1", "2", "10"))["y"].tolist() == [2, 1, 0, 1]
    explicit = splitting.class_names(df["label"], ["10", "2", "1"])
    assert explicit == ("10", "2", "1")
    assert splitting.add_class_ids(df, explicit)["y"].tolist() == [0, 1, 2, 1]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "x", "label": "a"', r"line 2: not valid JSON \(Expecting ',' delimiter"),
        ('["x", "a"]', r"line 2: a JSON list, not an object"),
        (
            '{"text": "x", "label": 1.5}',
            r"line 2, column 'label': label 1\.5 is a float; write a name or an integer",
        ),
        ('{"text": "x", "label": true}', r"line 2, column 'label': label True is a boolean"),
        ('{"text": "x", "label": null}', r"line 2, column 'label': no label \(null\)"),
        ('{"text": 7, "label": "a"}', r"line 2, column 'text': text 7 is not a string \(int\)"),
        ('{"text": "", "label": "a"}', r"line 2, column 'text': empty text"),
        (
            '{"body": "x", "label": "a"}',
            r"j\.jsonl line 2: no column 'text' \(columns: 'body', "
            r"'label'\); name the right one with --text-column",
        ),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path, line, message):
    path = _write(tmp_path / "j.jsonl", '{"text": "fine", "label": "b"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message) as err:
        data.read_table(path)
    assert str(path) in str(err.value)


def test_a_huge_bad_cell_is_quoted_in_part(tmp_path):
    """A bad cell of megabytes gives a message of a line, with the cell's size."""
    big = json.dumps({"text": {"a": "x" * 1_000_000}, "label": "a"})
    path = _write(tmp_path / "j.jsonl", '{"text": "fine", "label": "b"}\n' + big + "\n")
    with pytest.raises(ValueError) as err:
        data.read_table(path)
    message = str(err.value)
    assert len(message) < 400, message[:400]
    assert "line 2, column 'text': text {'a': 'xxx" in message
    assert "is not a string (dict)" in message


# --------------------------------------------------------------------------- parquet


def test_parquet_without_an_engine_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # None: "import pyarrow" fails
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    path = _write(tmp_path / "x.parquet", "not really parquet")
    with pytest.raises(
        ImportError,
        match=r"^reading x\.parquet needs pyarrow: "
        r"pip install 'gpt2_jax\[parquet\]'$",
    ):
        data.read_table(path)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
def test_parquet_rows_and_integer_labels(tmp_path):
    path = tmp_path / "x.parquet"
    pd.DataFrame({"body": ["a", "b", "c"], "y": [3, 1, 3]}).to_parquet(path)
    df = data.read_table(path, text_column="body", label_column="y")
    assert df["label"].tolist() == ["3", "1", "3"]
    assert df["where"].tolist() == ["x.parquet row 1", "x.parquet row 2", "x.parquet row 3"]
    pd.DataFrame({"text": ["a", "b"], "label": [1.0, 2.0]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"row 1, column 'label': label 1\.0 is a float"):
        data.read_table(path)


# --------------------------------------------------------------------------- classes


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
def test_parquet_texts_are_read_a_row_group_at_a_time(tmp_path, monkeypatch):
    """Texts to classify: a budget far below what reading the file whole needs, but above
    one row group's texts, still reads every row, in order, with the row numbers; a
    budget below one row group refuses the file before reading, in one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"text number {i} " + "x" * (i % 50) for i in range(3000)]
    texts[2500] = None
    path = tmp_path / "x.parquet"
    extra = [{"a": i, "b": f"{i:05d}" + "y" * 400} for i in range(3000)]  # a struct: 2 leaves
    table = pa.table({"extra": extra, "id": list(range(3000)), "body": texts})
    pq.write_table(table, path, row_group_size=300, compression="none", use_dictionary=False)
    meta = pq.ParquetFile(path).metadata
    assert [meta.schema.column(i).path for i in range(4)] == ["extra.a", "extra.b", "id", "body"]
    group = meta.row_group(0).column(3).total_uncompressed_size
    budget = 4 * group  # whole (the file size x 12) would be refused at this budget,
    assert path.stat().st_size * 12 > budget  # and so would the struct's larger leaves
    assert meta.row_group(0).column(1).total_uncompressed_size > budget
    monkeypatch.setattr(pq.ParquetFile, "read", None)  # reading the whole file would fail
    monkeypatch.setattr(pq, "read_table", None)
    rows = data.iter_rows(path, text_column="body", memory_budget=budget)
    got = [next(rows) for _ in range(2500)]
    assert got == [(f"row {i + 1}", t) for i, t in enumerate(texts[:2500])]
    with pytest.raises(ValueError, match=r"row 2501, column 'body': no text \(null\)"):
        list(rows)
    with pytest.raises(ValueError) as err:
        list(data.iter_rows(path, text_column="body", memory_budget=group))
    assert str(err.value).startswith(f"{path} (") and "largest row group" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"no column 'text'.*--text-column"):
        list(data.iter_rows(path, memory_budget=budget))


def test_class_order_rule_and_explicit_order():
    assert splitting.class_names(["spam", "ham", "spam"]) == ("ham", "spam")
    assert splitting.class_names(["b", "B", "a"]) == ("B", "a", "b")  # Python's string order
    assert splitting.class_names(["10", "-1", "2"]) == ("-1", "2", "10")
    assert splitting.class_names(["10", "2", "x"]) == ("10", "2", "x")  # not all integers
    assert splitting.class_names(["a", "b"], ["b", "a", "c"]) == ("b", "a", "c")
    with pytest.raises(
        ValueError,
        match=r"every row is labelled 'x'; a classifier needs at "
        r"least two classes",
    ):
        splitting.class_names(["x", "x"])
    with pytest.raises(
        ValueError,
        match=r"lacks the label\(s\) 'c', 'd' of the data \(first at "
        r"f\.csv line 4\); add them",
    ):
        splitting.class_names(
            ["a", "b", "c", "d"], ["a", "b"], where=[f"f.csv line {n}" for n in (2, 3, 4, 5)]
        )
    with pytest.raises(ValueError, match=r"names 'a' more than once"):
        splitting.class_names(["a", "b"], ["a", "b", "a"])


def test_a_label_not_seen_in_training_is_named_with_where():
    classes = splitting.class_names(labelled_frame({"a": 3, "b": 3})["label"])
    test = pd.DataFrame(
        {
            "text": ["t1", "t2", "t3"],
            "label": ["a", "x", "y"],
            "where": ["test.csv line 2", "test.csv line 5", "test.csv line 6"],
        }
    )
    with pytest.raises(
        ValueError,
        match=r"^test\.csv line 5: label 'x' does not occur in the "
        r"training data \(classes: a, b\) \(1 more rows have",
    ):
        splitting.add_class_ids(test, classes)
    ok = splitting.add_class_ids(test.iloc[:1], classes)
    assert ok["y"].dtype == np.int32 and "y" not in test  # a copy


def test_class_counts():
    assert splitting.class_counts([0, 2, 2], 4).tolist() == [1, 0, 2, 0]
    with pytest.raises(ValueError, match=r"class ids must be in 0\.\.1"):
        splitting.class_counts([0, 2], 2)


# --------------------------------------------------------------------------- splits


def _frame(counts, seed=0):
    df = labelled_frame(counts, seed)
    return splitting.add_class_ids(df, splitting.class_names(df["label"]))


def _per_class(splits):
    return [
        np.bincount(part["y"], minlength=len(part.attrs["classes"])).tolist()
        for _, part in splits.items()
    ]


@pytest.mark.parametrize(
    "counts, sizes, want",
    [
        # exact quotas: train 10 * (10, 6, 4) / 20; then val's 0.5 / 0.5 tie goes to class a
        ({"a": 10, "b": 6, "c": 4}, (10, 5, 5), [[5, 3, 2], [3, 1, 1], [2, 2, 1]]),
        # train's quota for b is 1.76, but b must keep a row for val and one for test
        ({"a": 14, "b": 3}, (10, 4, 3), [[9, 1], [3, 1], [2, 1]]),
        # val's quota for b is 0.77: every non-empty split gets at least one row of each class
        ({"a": 30, "b": 3}, (20, 5, 5), [[19, 1], [4, 1], [4, 1]]),
        ({"a": 30, "b": 3}, (20, 0, None), [[18, 2], [0, 0], [12, 1]]),
    ],
)
def test_stratified_split_counts_match_a_hand_count(counts, sizes, want):
    df = _frame(counts)
    splits = splitting.split(df, *sizes, seed=5, stratify=True)
    assert _per_class(splits) == want
    shuffled = df.sample(frac=1, random_state=5)["text"].tolist()
    for _, part in splits.items():  # each split keeps the shuffled order
        positions = [shuffled.index(t) for t in part["text"]]
        assert positions == sorted(positions)
    for k in range(len(counts)):  # each class is cut in its shuffled order: train first
        order = [t for t in shuffled if df.set_index("text").loc[t, "y"] == k]
        cut = sum((part["text"][part["y"] == k].tolist() for _, part in splits.items()), [])
        assert cut == order[: len(cut)]


def test_stratified_split_errors():
    with pytest.raises(ValueError, match=r"class 'b' has 2 row\(s\); add rows of that class"):
        splitting.split(_frame({"a": 20, "b": 2}), 10, 5, 5, stratify=True)
    assert _per_class(splitting.split(_frame({"a": 20, "b": 2}), 10, 0, 5, stratify=True)) == [
        [9, 1],
        [0, 0],
        [4, 1],
    ]
    with pytest.raises(
        ValueError,
        match=r"a stratified split of 2 rows cannot hold one row of "
        r"each of the 3 classes",
    ):
        splitting.split(_frame({"a": 9, "b": 9, "c": 9}), 10, 2, 5, stratify=True)


def test_plain_split_is_consecutive_slices_of_the_shuffle():
    df = _frame({"a": 30, "b": 12, "c": 8})
    splits = splitting.split(df, 20, 10, 5, seed=7)
    shuffled = df.sample(frac=1, random_state=7)["text"].tolist()
    assert [p["text"].tolist() for _, p in splits.items()] == [
        shuffled[:20],
        shuffled[20:30],
        shuffled[30:35],
    ]


def test_fraction_sizes():
    df = _frame({"a": 30, "b": 20})
    splits = splitting.split(df, 0.8, 0.1, None)
    assert [len(p) for _, p in splits.items()] == [40, 5, 5]
    splits = splitting.split(_frame({"a": 6, "b": 4}), 0.25, 0.35, 0.15)  # 2.5 -> 3, 3.5 -> 4
    assert [len(p) for _, p in splits.items()] == [3, 4, 2]
    with pytest.raises(
        ValueError,
        match=r"train size must be a count or a fraction in "
        r"\(0, 1\), got 1\.0",
    ):
        splitting.split(df, 1.0, 0, None)
    with pytest.raises(
        ValueError,
        match=r"train 40 \+ val 15 \+ test None = 55 rows wanted, "
        r"but the data has only 50",
    ):
        splitting.split(df, 0.8, 0.3, None)
    with pytest.raises(ValueError, match="split sizes must be positive: train size 0"):
        splitting.split(df, 0, 5, None)
    with pytest.raises(ValueError, match="add them with add_class_ids"):
        splitting.split(labelled_frame({"a": 3, "b": 3}), 2, 2, 2)


def test_balance_three_classes():
    df = _frame({"a": 40, "b": 7, "c": 15})
    balanced = splitting.balance_classes(df, seed=3)
    assert np.bincount(balanced["y"]).tolist() == [7, 7, 7]
    assert balanced["y"].tolist() == [0] * 7 + [1] * 7 + [2] * 7  # by class id
    assert balanced["text"].iloc[7:14].tolist() == df[df["y"] == 1]["text"].tolist()  # whole
    assert (
        balanced["text"].iloc[:7].tolist()
        == df[df["y"] == 0].sample(7, random_state=3)["text"].tolist()
    )
    splits = splitting.split(df, 0.5, 0.25, None, balance=True)
    assert sum(len(p) for _, p in splits.items()) == 21
    with pytest.raises(ValueError, match="rows wanted, but the data has only 21 after balancing"):
        splitting.split(df, 15, 10, None, balance=True)


# --------------------------------------------------------------------------- encoding


class _WordTokenizer:
    """One id per word: enough to count tokens without the BPE files."""

    def encode(self, text):
        return [len(word) for word in text.split()]


def _text_splits():
    df = splitting.add_class_ids(
        pd.DataFrame(
            {
                "text": ["a bb ccc dddd", "a", "bb ccccc", "a b", "xx yy zz"],
                "label": ["p", "q", "p", "q", "p"],
                "where": [f"f.csv line {n}" for n in range(2, 7)],
            }
        ),
        ("p", "q"),
    )
    return splitting.Splits(df.iloc[:3], df.iloc[3:4], df.iloc[4:])


def test_texts_longer_than_the_context_are_truncated_and_counted():
    encoded, length = encoding.encode_splits(_text_splits(), _WordTokenizer(), context_length=2)
    assert length == 2
    assert encoded["train"].ids.tolist() == [[1, 2], [1, 50256], [2, 5]]
    assert encoded["train"].labels.tolist() == [0, 1, 0]
    assert encoded["train"].truncated == 1 and encoded["test"].truncated == 1
    assert encoded["train"].lengths.tolist() == [2, 1, 2]


def test_token_ids_beyond_the_vocabulary_name_the_row():
    with pytest.raises(
        ValueError,
        match=r"^f\.csv line 4 \(train split\) has token id 5, but "
        r"the model's vocabulary has only 5 ids",
    ):
        encoding.encode_splits(_text_splits(), _WordTokenizer(), 16, vocab_size=5)


def test_encode_pads_with_end_of_text_and_truncates():
    enc = encoding.encode([[1, 2], [3, 4, 5, 6, 7], []], [0, 1, 0], max_length=4)
    assert enc.ids.tolist() == [[1, 2, 50256, 50256], [3, 4, 5, 6], [50256] * 4]
    assert enc.lengths.tolist() == [2, 4, 0] and enc.truncated == 1


@pytest.mark.parametrize(
    "truncate, length, want",
    [
        ("head", 4, [0, 1, 2, 3]),
        ("tail", 4, [6, 7, 8, 9]),
        ("head+tail", 4, [0, 1, 8, 9]),
        ("head+tail", 5, [0, 1, 2, 8, 9]),  # the start gets the odd token
        ("head+tail", 1, [0]),
        ("tail", 1, [9]),
    ],
)
def test_truncate_keeps_the_named_part(truncate, length, want):
    ten = list(range(10))
    enc = encoding.encode([ten, [3, 4]], [0, 1], max_length=length, truncate=truncate)
    assert enc.ids[0].tolist() == want and enc.lengths[0] == length
    assert enc.truncated == 1 + (length < 2)
    assert encoding.kept(ten, 10, truncate) == ten  # a text that fits is whole
    assert encoding.kept([3, 4], 4, truncate) == [3, 4]


def test_truncate_words_and_bad_mode():
    assert encoding.kept_words(40, "head") == "the first 40 tokens"
    assert encoding.kept_words(40, "tail") == "the last 40 tokens"
    assert encoding.kept_words(41, "head+tail") == "the first 21 and the last 20 tokens"
    with pytest.raises(ValueError, match=r"truncate must be one of .*got 'middle'"):
        encoding.encode([[1]], [0], 4, truncate="middle")


def test_head_is_the_default_and_the_labs_cut():
    tokens = [list(range(7)), [1, 2]]
    a = encoding.encode(tokens, [0, 1], 5)
    b = encoding.encode(tokens, [0, 1], 5, truncate="head")
    assert a.ids.tolist() == b.ids.tolist() == [[0, 1, 2, 3, 4], [1, 2, 50256, 50256, 50256]]


def test_epoch_order_is_seeded_drops_last_and_reshuffles():
    a = encoding.epoch_order(50, 16, seed=7, epoch=1)
    assert len(a) == 3 and all(len(b) == 16 for b in a)
    assert [b.tolist() for b in a] == [b.tolist() for b in encoding.epoch_order(50, 16, 7, 1)]
    assert [b.tolist() for b in a] != [b.tolist() for b in encoding.epoch_order(50, 16, 7, 2)]
    assert len(set(np.concatenate(a).tolist())) == 48
    assert sum(map(len, encoding.epoch_order(50, 16, 7, 1, drop_last=False))) == 50


def test_holdout_rows_do_not_move_with_the_train_size():
    df = _frame({"a": 40, "b": 20})
    shuffled = df.sample(frac=1, random_state=3)["text"].tolist()
    for train in (5, 20, 30, 40):  # fewer, as many as and more rows than before the block
        splits = splitting.split(df, train, 6, 8, seed=3, holdout_at=20)
        assert splits.held_out_at == 20
        assert splits.val["text"].tolist() == shuffled[20:26]
        assert splits.test["text"].tolist() == shuffled[26:34]
        assert splits.train["text"].tolist() == (shuffled[:20] + shuffled[34:])[:train]
    # where the block does not fit at its row it sits as far in as it fits
    tight = splitting.split(df, 40, 6, 8, seed=3, holdout_at=50)
    assert tight.held_out_at == 46 and tight.test["text"].tolist() == shuffled[52:60]
    # at the train size itself it is the plain cut
    plain = splitting.split(df, 20, 6, 8, seed=3)
    assert plain.held_out_at == 20
    assert splitting.split(df, 20, 6, 8, seed=3, holdout_at=20).train.equals(plain.train)
