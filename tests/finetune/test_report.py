"""Report for k named classes: the two-class lab prints and plots what it always did."""

import json
import math

import pytest

from gpt2_jax.finetune.report import (
    draw,
    epoch_table,
    history_plots,
    plot_history,
    short_name,
    short_names,
    write_json,
)
from gpt2_jax.training.metrics import classification_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAB = ("ham", "spam")
THREE = ["negative", "neutral", "positive_but_with_a_very_long_name"]


def _record(epoch, names, train, val, test=None):
    """An epoch record as finetune builds it, metrics from (labels, preds) pairs."""
    rec = {"epoch": epoch, "train_seconds": 1.25, "eval_seconds": 0.5, "train_step_loss": 0.7}
    for split, pair in (("train", train), ("val", val), ("test", test)):
        if pair is not None:
            rec[split] = classification_metrics(*pair, 0.5 / epoch, names)
    return rec


def _lab_record(epoch=1):
    return _record(
        epoch,
        LAB,
        ([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]),
        ([0, 0], [0, 0]),
        ([0, 1], [0, 1]),
    )


def _three_record(epoch=1):
    return _record(
        epoch,
        THREE,
        ([0, 0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]),
        ([0, 1, 2], [0, 0, 2]),
    )


def _assert_pngs(paths, names):
    assert sorted(p.name for p in paths) == sorted(names)
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_lab_table_is_the_labs():
    lines = epoch_table(_lab_record(), LAB).splitlines()
    assert lines[0] == ("epoch 1: training steps 1.2 s, evaluation 0.5 s; mean step loss 0.7000")
    # exactly the table the lab printed before classes were generalised
    assert lines[1] == (
        "split       loss       acc   ham acc  spam acc    spam P    spam R"
        "   spam F1   confusion [[TN FP] [FN TP]]"
    )
    assert lines[2] == (
        "train     0.5000    70.00%    83.33%    50.00%     0.667     0.500"
        "     0.571   [[5, 1], [2, 2]]"
    )
    assert lines[3].split() == [
        "val",
        "0.5000",
        "100.00%",
        "100.00%",
        "n/a",
        "n/a",
        "n/a",
        "0.000",
        "[[2,",
        "0],",
        "[0,",
        "0]]",
    ]
    assert lines[4].startswith("test ") and len(lines) == 5


def test_lab_plots_are_the_labs(tmp_path):
    history = [_lab_record(1), _lab_record(2)]
    _assert_pngs(
        plot_history(history, tmp_path, LAB), ["loss.png", "accuracy.png", "spam_recall.png"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accuracy.png",
        "loss.png",
        "spam_recall.png",
    ]


def test_three_class_table_names_every_class():
    table = epoch_table(_three_record(), THREE)
    header = table.splitlines()[1].split()
    assert header[:4] == ["split", "loss", "acc", "macro-F1"]
    assert "n/a" in table  # val: nobody predicted "neutral" -> precision NaN
    for name in short_names(THREE):
        assert f"{name} R" in table
        assert table.count(f"  {name} ") >= 2  # a per-class row in each split's block
    assert "positive_but_with_a_very_long_name" not in table  # shortened
    # columns stay aligned: every summary row as long as the header
    summary = table.splitlines()[1:4]
    assert len({len(line) for line in summary}) == 1
    train_block = table.split("train: per class")[1].split("\n\n")[0].splitlines()
    assert train_block[1].split()[:4] == ["precision", "recall", "F1", "support"]
    assert train_block[2].split()[1:] == ["0.667", "0.500", "0.571", "4", "|", "2", "1", "1"]
    assert "macro-F1" in table and "0.603" in table  # (4/7 + 4/7 + 2/3) / 3


def test_three_class_plots(tmp_path):
    history = [_three_record(1), _three_record(2)]
    _assert_pngs(
        plot_history(history, tmp_path, THREE),
        ["loss.png", "accuracy.png", "recall.png", "macro_f1.png"],
    )


def test_plots_survive_records_without_newer_keys(tmp_path):
    """A resumed run's earlier epochs may come from a metrics.json without per_class."""
    old = _three_record(1)
    for split in ("train", "val"):
        del old[split]["per_class"], old[split]["macro_f1"]
    assert "n/a" in epoch_table(old, THREE)
    _assert_pngs(
        plot_history([old, _three_record(2)], tmp_path, THREE),
        ["loss.png", "accuracy.png", "recall.png", "macro_f1.png"],
    )


def _drawn(history, names, selected=None):
    """{file: (legend texts, y-range, x of vertical lines, legend's left edge right of
    the axes)} of the figures plot_history draws."""
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    out = {}
    for plot in history_plots(history, names, selected):
        fig = draw(plot, epochs)
        ax = fig.axes[0]
        fig.canvas.draw()
        legend = ax.get_legend()
        texts = [t.get_text() for t in legend.get_texts()]
        outside = legend.get_window_extent().x0 >= ax.get_window_extent().x1
        vlines = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        out[plot.file] = (texts, ax.get_ylim(), vlines, outside)
        plt.close(fig)
    return out


def test_plot_legends_name_classes_whole_and_sit_outside():
    drawn = _drawn([_three_record(1), _three_record(2)], THREE)
    texts, _, _, outside = drawn["recall.png"]
    assert texts == THREE  # not shortened with "~"
    assert all(outside for *_, outside in drawn.values())


def test_plots_mark_the_selected_epoch_and_fix_the_unit_range():
    history = [_lab_record(1), _lab_record(2), _lab_record(3)]
    drawn = _drawn(history, LAB, selected=2)
    assert set(drawn) == {"loss.png", "accuracy.png", "spam_recall.png"}
    for name, (texts, ylim, vlines, _) in drawn.items():
        assert vlines == [2] and "kept: epoch 2" in texts
        if name != "loss.png":
            assert ylim == (0.0, 1.0)
    assert _drawn(history, LAB)["accuracy.png"][2] == []  # no mark before selection


def test_plot_history_draws_the_selected_epoch(tmp_path):
    history = [_three_record(1), _three_record(2)]
    _assert_pngs(
        plot_history(history, tmp_path, THREE, selected=1),
        ["loss.png", "accuracy.png", "recall.png", "macro_f1.png"],
    )


def test_short_names():
    assert short_name("spam") == "spam"
    assert short_name("abcdefghijklmnop", 12) == "abcdef~lmnop"
    assert len(short_name("x" * 40, 7)) == 7
    # both elide to "categ~_x_1": the class id goes in front instead
    clash = short_names(["category_alpha_x_1", "category_beta_x_1", "ok"], 10)
    assert clash == ["0:cate~x_1", "1:cate~x_1", "ok"]


def test_write_json_is_atomic_and_writes_nan(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"m": classification_metrics([0], [0], 0.0, LAB), "t": (1, 2)})
    back = json.loads(path.read_text())
    assert math.isnan(back["m"]["spam_precision"]) and back["t"] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"x": object()})
