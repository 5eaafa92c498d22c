"""A classifier on disk: ``save_classifier`` writes a run folder's ``classifier/``
(orbax), the BPE files and ``classifier.json`` (last); ``load_classifier`` and
``read_spec`` read them back, every problem named with its path."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

from gpt2_jax.classifier.spec import ClassifierConfig
from gpt2_jax.classifier.weights_file import (  # noqa: F401  (weights_sha256: re-exported)
    META_FILE,
    PARAMS_DIR,
    WEIGHTS_FILE,
    forget,
    prefetch,
    read_weights,
    weights_sha256,
    write_weights,
)
from gpt2_jax.data.tokenizer import BPE_FILES, bpe_files
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, param_shapes
from gpt2_jax.parallel.distributed import is_main, several, share_outcome
from gpt2_jax.parallel.mesh import to_host
from gpt2_jax.util.files import write_text_atomic
from gpt2_jax.util.tree import named_leaves

FORMAT = 3  # version of classifier.json's layout; bump when it changes incompatibly
# 2: may hold a fitted temperature and threshold; a file without them is written as 1, so
# that older readers still load it; a reader of 1 refuses 2 rather than ignore them
# 3: chunks long texts (``chunking``) or gives several labels per text (``multi_label``,
# ``thresholds``), never both (ClassifierConfig refuses the pair); only such classifiers
# are written as 3, and readers of 1 and 2 refuse them rather than truncate, or predict
# one label with a softmax
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
    want = dict(_model_shapes(cfg))
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


@functools.lru_cache(maxsize=4)
def _model_shapes(cfg: GPTConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(name, shape)`` of ``GPTModel(cfg)``'s leaves: traced once per config (a 124M
    model: 0.4 s), however often a classifier of it is checked."""
    return tuple((n, tuple(s.shape)) for n, s in named_leaves(param_shapes(cfg)).items())


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
    sha256 = write_weights(target / WEIGHTS_FILE, params)  # beside orbax's: quick to load
    files = bpe_files(bpe_dir) if bpe_dir is not None else None
    if files is not None:  # under OpenAI's names, whichever pair the folder has
        for src, name in zip(files, BPE_FILES):
            shutil.copyfile(src, run_dir / name)
    meta = {
        "format": spec.format,
        **spec.to_dict(),
        "tokenizer": _tokenizer_note(run_dir),
        "weights_sha256": sha256,  # the SHA-256 of weights_file, and weights_sha256(params)
        "weights_file": WEIGHTS_FILE,
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
    """``(model, params, spec)`` of a classifier saved by ``save_classifier``: from its
    ``weights.bin`` (``weights_file``), checked against the recorded SHA-256 as it is
    read; a folder saved before that file existed, through orbax, checked likewise."""
    run_dir = Path(run_dir).resolve()
    spec = read_spec(run_dir)
    target = run_dir / PARAMS_DIR
    if not target.is_dir():
        raise FileNotFoundError(
            f"{target}: missing, so {run_dir} holds no weights (the folder is damaged; train again)"
        )
    meta = json.loads((run_dir / META_FILE).read_text())
    recorded = meta.get("weights_sha256")
    recorded = recorded if isinstance(recorded, str) else None
    if "weights_file" in meta and recorded is not None:
        params = _read_weights_file(target, meta["weights_file"], recorded, spec.model)
    else:
        params = _restore_orbax(target, spec.model, recorded)
    return GPTModel(spec.model), params, spec


_AGAIN = "train again, or copy the run folder again from where it was made"


def _read_weights_file(target: Path, name, recorded: str, cfg: GPTConfig) -> dict:
    """The weights in ``target/name`` (``weights_file`` of classifier.json), verified."""
    if name != WEIGHTS_FILE:
        raise ValueError(
            f"{target.parent / META_FILE}: weights_file is {name!r}, expected "
            f"{WEIGHTS_FILE!r}; the file is damaged ({_AGAIN})"
        )
    path = target / WEIGHTS_FILE
    if not path.is_file():
        raise ValueError(
            f"{target}: {WEIGHTS_FILE} is missing ({META_FILE} names it), so the folder "
            f"is damaged; {_AGAIN}"
        )
    prefetch(path)  # read and hashed in a thread while the model's shapes are traced
    try:
        _model_shapes(cfg)
    except BaseException:
        forget(path)
        raise
    try:
        params = read_weights(path, recorded)
    except ValueError:
        raise ValueError(
            f"{target}: the classifier's weight file {WEIGHTS_FILE} is damaged (its SHA-256 "
            f"is not the one recorded in {META_FILE}); {_AGAIN}"
        ) from None
    check_params(params, cfg, str(path))  # a classifier.json edited to another model
    return params


def _restore_orbax(target: Path, cfg: GPTConfig, recorded: str | None) -> dict:
    """The weights in orbax's files (all a folder saved before ``weights.bin`` has)."""
    import orbax.checkpoint as ocp

    try:
        params = ocp.StandardCheckpointer().restore(target, param_shapes(cfg))
    except Exception as err:  # orbax/TensorStore raise many types, in their own words
        raise ValueError(
            f"{target}: the classifier's weight files are missing or damaged (they cannot be "
            f"read as the model {META_FILE} describes); train again, or copy the run folder "
            "again from where it was made (--debug shows the library's own error)"
        ) from err
    if recorded is not None and weights_sha256(params) != recorded:
        raise ValueError(
            f"{target}: the weights read back differ from those saved (SHA-256 recorded in "
            f"{META_FILE}), so the files are damaged; train again, or copy the run folder again"
        )
    return params
