"""A classifier on disk: ``save_classifier`` writes a run folder's ``classifier/``
(orbax), the BPE files and ``classifier.json`` (last); ``load_classifier`` and
``read_spec`` read them back, every problem named with its path."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

from gpt2_jax.classifier.spec import ClassifierConfig
from gpt2_jax.data.tokenizer import BPE_FILES, bpe_files
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, param_shapes
from gpt2_jax.parallel.distributed import is_main, several, share_outcome
from gpt2_jax.parallel.mesh import to_host
from gpt2_jax.util.files import write_text_atomic
from gpt2_jax.util.tree import named_leaves

META_FILE = "classifier.json"
PARAMS_DIR = "classifier"
FORMAT = 3  # version of classifier.json's layout; bump when it changes incompatibly
# 2: may hold a fitted temperature and threshold; a file without them is written as 1, so
# that older readers still load it; a reader of 1 refuses 2 rather than ignore them
# 3: chunks long texts (``chunking``), or several labels per text (``multi_label``,
# ``thresholds``); only such classifiers are written as 3, and readers of 1 and 2 refuse
# them rather than truncate, or predict one label with a softmax
FORMATS = (1, 2, 3)


def _upgrade_legacy(meta: dict) -> dict:
    """classifier.json as written before ``format`` 1 (``config`` for ``model``): runs
    trained then still load."""
    if "format" not in meta and "config" in meta and "model" not in meta:
        meta = {**meta, "model": meta["config"], "format": FORMAT}
    return meta


def check_params(params, cfg: GPTConfig, where: str) -> None:
    """Raise one ``ValueError`` if ``params`` is not a tree of ``GPTModel(cfg)``'s shapes."""
    have = {n: tuple(np.shape(leaf)) for n, leaf in named_leaves(params).items()}
    want = {n: tuple(s.shape) for n, s in named_leaves(param_shapes(cfg)).items()}
    if have == want:
        return
    problems = (
        [f"{n}: missing" for n in want if n not in have]
        + [f"{n}: not in the model" for n in have if n not in want]
        + [f"{n}: {have[n]} vs {want[n]}" for n in want if n in have and have[n] != want[n]]
    )
    raise ValueError(
        f"{where}: parameters do not fit the model config ("
        + "; ".join(problems[:5])
        + (" ..." if len(problems) > 5 else "")
        + ")"
    )


def _tokenizer_note(run_dir: Path) -> str:
    if all((run_dir / name).is_file() for name in BPE_FILES):
        return "gpt2 BPE: encoder.json + vocab.bpe in this folder"
    return "gpt2 BPE: tiktoken's 'gpt2' encoding (no BPE files in this folder)"


def _write_json_atomic(path: Path, obj) -> None:
    """Whole or not at all (``util.files.atomic_write``): readers never see half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2))


def save_classifier(
    run_dir: str | os.PathLike,
    params,
    spec: ClassifierConfig,
    bpe_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``run_dir/classifier/`` (orbax), copy the BPE files from ``bpe_dir`` and
    write ``run_dir/classifier.json`` last; returns the parameters' folder.

    An old classifier.json is removed first, so a save that dies half-way leaves a
    folder that ``load_classifier`` calls unfinished rather than a mix of old and new.
    With several processes every process calls it (the weights are gathered) and
    process 0 writes; the others learn whether it worked."""
    if not isinstance(spec, ClassifierConfig):
        raise TypeError(
            f"save_classifier needs a ClassifierConfig (labels, pool, max_length, "
            f"model config), got {type(spec).__name__}"
        )
    run_dir = Path(run_dir).resolve()
    check_params(params, spec.model, f"save_classifier({run_dir})")
    target = run_dir / PARAMS_DIR
    if several():  # gathered on every process (a collective), written by process 0 alone
        params = jax.tree.map(to_host, params)
        if not is_main():
            share_outcome(True, "save the classifier")
            return target
    try:
        _write_classifier(run_dir, target, params, spec, bpe_dir)
    except BaseException:
        share_outcome(False, "save the classifier")
        raise
    share_outcome(True, "save the classifier")
    return target


def _write_classifier(run_dir: Path, target: Path, params, spec: ClassifierConfig, bpe_dir) -> None:
    import orbax.checkpoint as ocp

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / META_FILE).unlink(missing_ok=True)
    if target.exists():
        shutil.rmtree(target)
    checkpointer = ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=jax.process_index(), active_processes={jax.process_index()}
        )
    )
    checkpointer.save(target, params)
    checkpointer.wait_until_finished()
    files = bpe_files(bpe_dir) if bpe_dir is not None else None
    if files is not None:  # under OpenAI's names, whichever pair the folder has
        for src, name in zip(files, BPE_FILES):
            shutil.copyfile(src, run_dir / name)
    meta = {
        "format": spec.format,
        **spec.to_dict(),
        "tokenizer": _tokenizer_note(run_dir),
        "weights_sha256": weights_sha256(params),
    }
    _write_json_atomic(run_dir / META_FILE, meta)


def read_spec(run_dir: str | os.PathLike) -> ClassifierConfig:
    """The ``ClassifierConfig`` in ``run_dir/classifier.json``; errors name the path."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(
            f"{run_dir} is a file; give the run folder (the one holding classifier.json)"
        )
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir}: no such folder (expected a run folder written by experiments.spam)"
        )
    path = run_dir / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a finished run: no {META_FILE} (training "
            "writes it last; train again or pick another folder)"
        )
    try:
        meta = _upgrade_legacy(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the file is damaged") from None
    if isinstance(meta, dict) and meta.get("format", FORMAT) not in FORMATS:
        raise ValueError(
            f"{path}: format {meta['format']!r}, this version reads format "
            f"{' and '.join(map(str, FORMATS))}; use the gpt2_jax version that wrote it"
        )
    try:
        return ClassifierConfig.from_dict(meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def load_classifier(run_dir: str | os.PathLike) -> tuple[GPTModel, dict, ClassifierConfig]:
    """``(model, params, spec)`` of a classifier saved by ``save_classifier``."""
    import orbax.checkpoint as ocp

    run_dir = Path(run_dir).resolve()
    spec = read_spec(run_dir)
    target = run_dir / PARAMS_DIR
    if not target.is_dir():
        raise FileNotFoundError(
            f"{target}: missing, so {run_dir} holds no weights (the folder is damaged; train again)"
        )
    try:
        params = ocp.StandardCheckpointer().restore(target, param_shapes(spec.model))
    except Exception as err:  # orbax/TensorStore raise many types, in their own words
        raise ValueError(
            f"{target}: the classifier's weight files are missing or damaged (they cannot be "
            f"read as the model {META_FILE} describes); train again, or copy the run folder "
            "again from where it was made (--debug shows the library's own error)"
        ) from err
    recorded = _recorded_sha256(run_dir / META_FILE)
    if recorded is not None and weights_sha256(params) != recorded:
        raise ValueError(
            f"{target}: the weights read back differ from those saved (SHA-256 recorded in "
            f"{META_FILE}), so the files are damaged; train again, or copy the run folder again"
        )
    return GPTModel(spec.model), params, spec


def weights_sha256(params) -> str:
    """SHA-256 of every leaf's name, dtype, shape and bytes, in name order (on the host)."""
    h = hashlib.sha256()
    for name, leaf in sorted(named_leaves(params).items()):
        array = np.ascontiguousarray(to_host(leaf))
        h.update(f"{name}:{array.dtype}:{array.shape};".encode())
        h.update(array.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _recorded_sha256(path: Path) -> str | None:
    """The weights' SHA-256 in classifier.json (None: saved before it was recorded)."""
    value = json.loads(path.read_text()).get("weights_sha256")
    return value if isinstance(value, str) else None
