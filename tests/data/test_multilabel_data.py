"""Label sets read from a file: JSON lists, names between a separator, one 0/1 column per
label; the label order; bad cells named in one line with file, line and column."""

import json

import numpy as np
import pytest
from synthetic import write_rows

from gpt2_jax.data.multilabel import label_matrix, label_order, read_label_sets


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_json_lists_separators_and_columns_give_the_same_sets(tmp_path):
    lists = _jsonl(
        tmp_path / "a.jsonl",
        [
            {"text": "goal and vote", "label": ["sports", "politics"]},
            {"text": "quiet day", "label": []},
            {"text": "goal", "label": "sports"},
        ],
    )
    sep = write_rows(
        tmp_path / "b.csv",
        [("goal and vote", "sports; politics"), ("quiet day", ""), ("goal", "sports")],
    )
    columns = write_rows(
        tmp_path / "c.tsv",
        [("goal and vote", "1", "1"), ("quiet day", "0", "0"), ("goal", "1", "0")],
        header=("text", "sports", "politics"),
        delimiter="\t",
    )
    frames = [
        read_label_sets(lists),
        read_label_sets(sep, label_sep=";"),
        read_label_sets(columns, label_columns=("sports", "politics")),
    ]
    for frame in frames:
        assert frame["labels"].tolist() == [("sports", "politics"), (), ("sports",)]
        assert frame["text"].tolist() == ["goal and vote", "quiet day", "goal"]
    assert frames[1]["where"].tolist() == ["b.csv line 2", "b.csv line 3", "b.csv line 4"]
    labels = label_order(frames[0])
    assert labels == ("politics", "sports")
    np.testing.assert_array_equal(label_matrix(frames[0], labels), [[1, 1], [0, 0], [0, 1]])


@pytest.mark.parametrize(
    "record, said",
    [
        ({"text": "x", "label": None}, "line 2, column 'label': no label set (null); write []"),
        ({"text": "x", "label": ["a", 1.5]}, "line 2, column 'label': label 1.5 is a float"),
        ({"text": "", "label": ["a"]}, "line 2, column 'text': empty text"),
    ],
)
def test_a_bad_label_set_is_one_line_naming_file_line_and_column(tmp_path, record, said):
    path = _jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "label": ["a"]}, record])
    with pytest.raises(ValueError) as err:
        read_label_sets(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path} {said}")


def test_bad_indicator_and_separator_cells_say_what_to_write(tmp_path):
    path = write_rows(tmp_path / "c.csv", [("t", "1", "yes")], header=("text", "a", "b"))
    with pytest.raises(
        ValueError, match=r"c\.csv line 2, column 'b': 'yes' is not 0 or 1; write 1"
    ):
        read_label_sets(path, label_columns=("a", "b"))
    with pytest.raises(ValueError, match=r"no column 'z' .*--label-columns"):
        read_label_sets(path, label_columns=("a", "z"))
    path = write_rows(tmp_path / "s.csv", [("t", "a;;b")])
    with pytest.raises(ValueError, match=r"s\.csv line 2, column 'label': 'a;;b' has an empty"):
        read_label_sets(path, label_sep=";")


def test_label_order_refuses_one_label_and_unknown_names(tmp_path):
    frame = read_label_sets(_jsonl(tmp_path / "one.jsonl", [{"text": "x", "label": ["a"]}]))
    with pytest.raises(ValueError, match="at least two"):
        label_order(frame)
    with pytest.raises(ValueError, match=r"one\.jsonl line 1: label 'a' is not in the label list"):
        label_order(frame, ("b", "c"))
    with pytest.raises(ValueError, match=r"one\.jsonl line 1: label 'a' does not occur"):
        label_matrix(frame, ("b", "c"))


def test_a_list_label_without_multi_label_says_how_to_read_it(tmp_path):
    from gpt2_jax.data.tables import read_table

    path = _jsonl(tmp_path / "l.jsonl", [{"text": "x", "label": ["a", "b"]}])
    with pytest.raises(ValueError, match=r"line 1, column 'label': .* is a list; .*--multi-label"):
        read_table(path)
