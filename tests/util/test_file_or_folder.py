"""A file given where a folder is wanted, or a folder where a file is, is named as such."""

import pytest

from gpt2_jax.classifier.saved import read_spec
from gpt2_jax.commands import make_checkpoint
from gpt2_jax.data.tables import read_table
from gpt2_jax.weights.pretrained import read_folder_settings


def test_each_place_says_file_or_folder(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    with pytest.raises(IsADirectoryError, match=f"^{tmp_path} is a folder; the data must be"):
        read_table(tmp_path)
    with pytest.raises(NotADirectoryError, match=f"^{a_file} is a file; give the run folder"):
        read_spec(a_file)
    with pytest.raises(NotADirectoryError, match=f"^{a_file} is a file; --model-dir takes"):
        read_folder_settings(a_file)
    assert make_checkpoint.main(["--out", str(a_file)]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: {a_file} is a file; --out takes a folder to write"
    )
