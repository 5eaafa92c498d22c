"""Reading a data file in bounded memory: CSV/TSV/JSONL read a block at a time with only
the kept cells held, a file over the memory budget refused in one line naming it (and
without reading it whole), a JSON key given twice refused with its line."""

import json
import tracemalloc

import pytest

from gpt2_jax.data import budget
from gpt2_jax.data import tables as data

MIB = 1 << 20


def _big_csv(path, rows, wide=0):
    """``rows`` short labelled rows; ``wide``: characters of an unused third column."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label,notes\n")
        for i in range(rows):
            f.write(f"message {i} about nothing much,{'ab'[i % 2]},{'n' * wide}\n")
    return path


def _peak(read):
    """(what ``read()`` returns or raises, the peak Python memory it took)."""
    tracemalloc.start()
    try:
        try:
            out = read()
        except ValueError as err:
            out = err
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_file_over_the_budget_is_refused_early_in_one_line(tmp_path):
    path = _big_csv(tmp_path / "big.csv", 100_000)  # 4 MiB
    size = path.stat().st_size
    err, peak = _peak(lambda: data.read_table(path, memory_budget=MIB // 4))
    assert isinstance(err, ValueError)
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path} ({size / MIB:.1f} MiB): the rows up to line ")
    assert "over the budget of 0.2 MiB (the memory budget given)" in message
    assert budget.BUDGET_ENV in message
    assert peak < size / 4  # stopped at the budget, never the whole file in memory


def test_only_the_kept_columns_take_memory(tmp_path):
    """A wide column nobody asked for is read past, not held: the peak stays well under
    the file's size (reading the file whole, as before, took ~7 times it)."""
    path = _big_csv(tmp_path / "wide.csv", 5_000, wide=1_000)  # 5 MiB
    df, peak = _peak(lambda: data.read_table(path))
    assert len(df) == 5_000 and df["label"].tolist()[:2] == ["a", "b"]
    assert peak < path.stat().st_size / 2


def test_the_budget_from_the_environment_is_named(tmp_path, monkeypatch):
    path = tmp_path / "x.jsonl"
    path.write_text(
        "".join(json.dumps({"text": "t" * 100, "label": "a"}) + "\n" for _ in range(99))
    )
    monkeypatch.setenv(budget.BUDGET_ENV, "0.00001")  # ~10 KiB
    with pytest.raises(
        ValueError, match=rf"over the budget of 0\.0 MiB \({budget.BUDGET_ENV}=0\.00001\)"
    ):
        data.read_table(path)
    monkeypatch.setenv(budget.BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match=rf"^{budget.BUDGET_ENV}='lots' is not a number of GiB"):
        data.read_table(path)
    monkeypatch.setenv(budget.BUDGET_ENV, "1")
    assert len(data.read_table(path)) == 99


def test_a_file_read_whole_is_sized_before_reading(tmp_path):
    path = tmp_path / "SMSSpamCollection"
    path.write_text("ham\thello there\nspam\twin a prize\n" * 2_000)
    limit = path.stat().st_size  # well under what reading it whole takes
    with pytest.raises(
        ValueError, match=r"SMSSpamCollection \(0\.1 MiB\): reading it whole takes about"
    ):
        data.read_table(path, memory_budget=limit)
    assert len(data.read_table(path, memory_budget=10 * limit)) == 4_000


def test_the_default_budget_is_half_the_memory_available(monkeypatch):
    monkeypatch.delenv(budget.BUDGET_ENV, raising=False)
    free = budget.memory_available()
    limit, source = budget.data_budget()
    if free is None:
        assert limit is None
    else:
        assert 0 < free and abs(limit - free // 2) < free // 10  # free memory moves a little
        assert source == "half the memory available now"


def test_a_bad_byte_deep_in_a_file_is_placed_by_line(tmp_path):
    """Past the first block read (8 KiB), the line and byte are still exact."""
    path = tmp_path / "x.csv"
    path.write_bytes(b"text,label\n" + b"hello,a\n" * 5_000 + b"caf\xe9,b\n")
    with pytest.raises(ValueError, match=r"x\.csv line 5002, byte 4: 0xe9 is not UTF-8"):
        data.read_table(path)


@pytest.mark.parametrize(
    "line, key",
    [
        ('{"text": "x", "label": "a", "label": "b"}', "label"),
        ('{"text": "x", "label": "a", "meta": {"k": 1, "k": 2}}', "k"),
    ],
)
def test_a_key_twice_in_a_json_line_is_named(tmp_path, line, key):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine", "label": "b"}\n' + line + "\n")
    with pytest.raises(
        ValueError, match=rf"^{path} line 2: key '{key}' appears twice in one object; keep one"
    ):
        data.read_table(path)
