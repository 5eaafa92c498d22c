"""Everything a first run lacks, said at once: the data and GPT-2's files, each with the
flag that points at a copy, the forms that flag takes, and the offline way round.

The data is read before GPT-2's files are fetched (every data error comes before 500 MB
of weights), so when the data cannot be had, GPT-2's files are only looked for on disk,
never downloaded, and whatever is absent joins the same error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gpt2_jax.finetune.config import ModelConfig
from gpt2_jax.util.fetch import (
    DownloadError,
    MissingFile,
    missing_count,
    missing_lines,
    offline_requested,
)
from gpt2_jax.weights.download import GPT2_FILES, download_gpt2

T = TypeVar("T")

DATA_HINT = (
    "  or give --data-file FILE: that zip as downloaded, or the SMSSpamCollection "
    "file unzipped from it"
)


def model_hints(m: ModelConfig) -> list[str]:
    """How to point the run at GPT-2 by hand, or do without OpenAI's weights."""
    random_dir = Path(m.models_dir) / f"random-{m.model_size}"
    return [
        f"  or give --model-dir DIR: a folder with OpenAI's seven files ({', '.join(GPT2_FILES)}) "
        "or a Hugging Face GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt)",
        "  or, on a machine that will never have OpenAI's weights, write random ones "
        f"(results are then not GPT-2's): python -m experiments.make_checkpoint --size "
        f"{m.model_size} --out {random_dir} --bpe-dir DIR (DIR: a folder with GPT-2's "
        f"encoder.json and vocab.bpe), then give --model-dir {random_dir}",
    ]


class MissingInputs(RuntimeError):
    """The run's data and/or GPT-2 files could not be had; the message lists them all."""

    def __init__(self, data: list[MissingFile], model: list[MissingFile], m: ModelConfig):
        self.data, self.model = data, model
        lines = [
            "the run lacks "
            + " and ".join(
                what
                for what, files in (("its data", data), (f"GPT-2 {m.model_size}", model))
                if files
            )
            + (" (offline mode: nothing was downloaded)" if _offline(m) else "")
            + ":"
        ]
        if data:
            lines.append(f"the data: {missing_count(data)} file(s) missing:")
            lines += [*missing_lines(data), DATA_HINT]
        if model:
            lines.append(f"GPT-2 {m.model_size}: {missing_count(model)} file(s) missing:")
            lines += [*missing_lines(model), *model_hints(m)]
        super().__init__("\n".join(lines))


def _offline(m: ModelConfig) -> bool:
    return m.offline or offline_requested()


def model_files_missing(m: ModelConfig) -> list[MissingFile]:
    """GPT-2's files the run would download and does not have on disk (nothing is
    fetched); empty where the run takes a folder or the Hub, or trains from scratch."""
    if m.model_dir is not None or m.hf_repo is not None or m.weights != "pretrained":
        return []
    try:
        download_gpt2(m.model_size, m.models_dir, offline=True)
    except DownloadError as err:
        reason = None if _offline(m) else "not on disk; not downloaded, since the data is missing"
        return [dataclasses.replace(f, reason=reason or f.reason) for f in err.missing]
    return []


def data_first(read: Callable[[], T], m: ModelConfig) -> T:
    """``read()`` (the data); if its download fails, raise ``MissingInputs`` naming it
    together with GPT-2's files that are not on disk either."""
    try:
        return read()
    except DownloadError as err:
        raise MissingInputs(err.missing, model_files_missing(m), m) from None


def model_files(fetch: Callable[[], T], m: ModelConfig) -> T:
    """``fetch()`` (GPT-2's files); a failed download says how to do without it."""
    try:
        return fetch()
    except DownloadError as err:
        raise MissingInputs([], err.missing, m) from None
