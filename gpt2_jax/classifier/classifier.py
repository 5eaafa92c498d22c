"""GPT-2 with its LM head replaced by a class head: build, save, load, predict.

A saved classifier is a run folder holding

* ``classifier/`` - the parameters (orbax),
* ``encoder.json`` + ``vocab.bpe`` - the tokenizer,
* ``classifier.json`` - what the classifier *is* (``ClassifierConfig``: label names,
  pooling, max length, model config), written last, so its presence means the rest
  is complete.

``Classifier.load(run_dir).predict(texts)`` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.data.batches import BUCKET_STEP, prefix_schedule
from gpt2_jax.data.encoding import check_truncate, encode, token_lists
from gpt2_jax.data.tokenizer import BPE_FILES, bpe_files
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, init_params, param_shapes
from gpt2_jax.model.pooling import check_pool, classify, reads_padding
from gpt2_jax.parallel.distributed import is_main, several, share_outcome
from gpt2_jax.parallel.mesh import to_host
from gpt2_jax.util.files import write_text_atomic
from gpt2_jax.util.tree import named_leaves, path_name

META_FILE = "classifier.json"
PARAMS_DIR = "classifier"
MODEL_SIZE_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "num_classes")
FORMAT = 1  # version of classifier.json's layout; bump when it changes incompatibly


def with_class_head(pretrained, cfg: GPTConfig, seed: int) -> tuple[dict, list[str]]:
    """Parameters for ``GPTModel(cfg)`` (``cfg.num_classes`` set): every leaf that
    ``pretrained`` has is taken from it, the others (the class head) are initialised
    from ``seed``. Returns ``(params, names initialised)``.

    Only the missing leaves are initialised: the init runs under ``jit`` and returns
    just those, so XLA drops the rest and no second copy of the backbone is made."""
    if pretrained is None:
        fresh = init_params(cfg, seed)
        return fresh, list(named_leaves(fresh))
    have = named_leaves(pretrained)
    shapes = param_shapes(cfg)
    want = named_leaves(shapes)
    wrong = [
        f"{n}: checkpoint {have[n].shape} vs model {want[n].shape}"
        for n in want
        if n in have and tuple(have[n].shape) != want[n].shape
    ]
    extra = [n for n in have if n not in want]
    if wrong or extra:
        raise ValueError(
            "pretrained weights do not fit the classifier: "
            + "; ".join(wrong + [f"{n}: not in the model" for n in extra])
        )
    missing = [n for n in want if n not in have]
    fresh = jax.jit(
        lambda: {
            n: leaf for n, leaf in named_leaves(init_params(cfg, seed)).items() if n in missing
        }
    )()
    merged = jax.tree_util.tree_map_with_path(
        lambda path, _: (
            fresh[path_name(path)]
            if path_name(path) in fresh
            else jnp.asarray(have[path_name(path)])
        ),
        shapes,
    )
    return merged, missing


# --------------------------------------------------------------------------- config


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to use a trained classifier besides its weights.

    ``model``: the GPT-2 config (``num_classes == len(labels)``); ``labels``: class
    names, index = class id; ``pool``: which position is read (``pooling.POOLS``);
    ``max_length``: tokens per text, longer texts are truncated to it, keeping the part
    ``truncate`` names (``data.encoding.TRUNCATIONS``; ``head`` where an older
    classifier.json has no such key). Frozen and hashable, so it can be a static argument of ``jax.jit``.
    """

    model: GPTConfig
    labels: tuple[str, ...]
    pool: str
    max_length: int
    truncate: str = "head"

    def __post_init__(self):
        if not isinstance(self.model, GPTConfig):
            raise TypeError(
                f"ClassifierConfig.model must be a GPTConfig, got {type(self.model).__name__}"
            )
        if not isinstance(self.labels, (list, tuple)) or not all(
            isinstance(x, str) for x in self.labels
        ):
            raise ValueError(
                f"ClassifierConfig.labels must be a sequence of class names "
                f"(strings), got {self.labels!r}"
            )
        object.__setattr__(self, "labels", tuple(self.labels))  # lists (JSON) -> hashable
        if len(set(self.labels)) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(
                f"ClassifierConfig.labels must be >= 2 distinct names, got {list(self.labels)}"
            )
        if self.model.num_classes != len(self.labels):
            raise ValueError(
                f"ClassifierConfig: model.num_classes={self.model.num_classes} but "
                f"{len(self.labels)} labels {list(self.labels)}"
            )
        check_pool(self.pool)
        check_truncate(self.truncate)
        ctx = self.model.context_length
        if not _is_int(self.max_length) or not 0 < self.max_length <= ctx:
            raise ValueError(
                f"ClassifierConfig.max_length must be an int in 1..{ctx} (the "
                f"model's context_length), got {self.max_length!r}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"model": {...GPTConfig fields}, "labels": [...], "pool",
        "max_length", "truncate"}``."""
        return {
            "model": dataclasses.asdict(self.model),
            "labels": list(self.labels),
            "pool": self.pool,
            "max_length": self.max_length,
            "truncate": self.truncate,
        }

    @classmethod
    def from_dict(cls, d) -> ClassifierConfig:
        """Inverse of ``to_dict``; other keys (``format``, ``tokenizer``) are ignored.
        Raises one ``ValueError`` naming the key that is missing or wrong."""
        if not isinstance(d, dict):
            raise ValueError(
                f"expected a JSON object with keys model, labels, pool, "
                f"max_length; got {type(d).__name__}"
            )
        missing = [k for k in ("model", "labels", "pool", "max_length") if k not in d]
        if missing:
            raise ValueError(f"missing key(s) {missing} (have {sorted(d)})")
        if not isinstance(d["model"], dict):
            raise ValueError(
                f"key 'model' must be an object of GPTConfig fields, got {d['model']!r}"
            )
        # Sizes must be there: GPTConfig's defaults (124M) would silently not fit the weights.
        absent = [k for k in MODEL_SIZE_KEYS if k not in d["model"]]
        if absent:
            raise ValueError(f"key 'model' lacks {absent}")
        try:
            model = GPTConfig(**d["model"])
        except (TypeError, ValueError) as err:  # an unknown field, a bad value
            raise ValueError(f"key 'model': {err}") from None
        if not isinstance(d["labels"], list):
            raise ValueError(f"key 'labels' must be a list of class names, got {d['labels']!r}")
        return cls(
            model=model,
            labels=tuple(d["labels"]),
            pool=d["pool"],
            max_length=d["max_length"],
            truncate=d.get("truncate", "head"),  # classifiers saved before --truncate
        )


def _upgrade_legacy(meta: dict) -> dict:
    """classifier.json as written before ``format`` 1 (``config`` for ``model``): runs
    trained then still load."""
    if "format" not in meta and "config" in meta and "model" not in meta:
        meta = {**meta, "model": meta["config"], "format": FORMAT}
    return meta


# --------------------------------------------------------------------------- save/load


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
    meta = {"format": FORMAT, **spec.to_dict(), "tokenizer": _tokenizer_note(run_dir)}
    _write_json_atomic(run_dir / META_FILE, meta)


def read_spec(run_dir: str | os.PathLike) -> ClassifierConfig:
    """The ``ClassifierConfig`` in ``run_dir/classifier.json``; errors name the path."""
    run_dir = Path(run_dir)
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
    if isinstance(meta, dict) and meta.get("format", FORMAT) != FORMAT:
        raise ValueError(
            f"{path}: format {meta['format']!r}, this version reads format "
            f"{FORMAT}; use the gpt2_jax version that wrote it"
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
    except Exception as err:  # orbax raises many types; the first line says what
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{target}: cannot restore the weights of the model in {META_FILE} ({first})"
        ) from err
    return GPTModel(spec.model), params, spec


# --------------------------------------------------------------------------- predict


@functools.partial(jax.jit, static_argnames=("cfg", "pool"))
def class_probs(params, ids, lengths, *, cfg: GPTConfig, pool: str):
    """Class probabilities [B, C] for token ids [B, W] with real lengths [B].

    Compiled once per (ids shape, cfg, pool): the weights are an argument, not
    constants baked into the program, so any parameter tree of these shapes reuses it.
    Only the pooled position is computed in the last block (exact, see GPTModel)."""
    return jax.nn.softmax(classify(GPTModel(cfg), params, ids, lengths, pool), axis=-1)


def _check_texts(texts) -> list[str]:
    """``texts`` as a list of strings; a bare string is an easy mistake (it would be
    classified character by character), so it is refused."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, not one string: use [text]")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__} ({text!r}), not a string")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty; a classifier needs some text to read")
    return texts


def _encode_texts(
    tokenizer, texts: list[str], max_length: int, vocab_size: int, truncate: str = "head"
):
    """Encoded as in training (``data.encode``): ``(Encoded, truncated [N] bool)``."""
    tokens = token_lists(tokenizer, texts)
    for i, toks in enumerate(tokens):
        if toks and max(toks) >= vocab_size:  # an out-of-range id would be silently clamped
            raise ValueError(
                f"text {i} has token id {max(toks)}, but the model's vocabulary "
                f"has {vocab_size} ids: tokenizer and model do not belong together"
            )
    truncated = np.array([len(t) > max_length for t in tokens], bool)
    return encode(tokens, np.zeros(len(texts)), max_length, truncate), truncated


def _probs(
    cfg: GPTConfig, params, ids: np.ndarray, lengths: np.ndarray, pool: str, batch_size: int
) -> np.ndarray:
    """[N, C] probabilities for encoded ids [N, L] (L = max_length).

    Every batch has ``batch_size`` rows (the last repeats rows, the extra results are
    dropped), so few shapes compile. Pools that read only real tokens take rows in length
    order and cut each batch to ``bucket_length(longest, L)``: exact, since under the
    causal mask nothing after the last real token reaches them. "last" reads position
    L-1, so its batches keep the full width."""
    if not _is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(ids)
    if cfg.num_classes is None:
        raise ValueError(
            "class probabilities need a classifier (num_classes set), not a language model"
        )
    out = np.zeros((n, cfg.num_classes), np.float32)
    schedule = prefix_schedule(
        lengths,
        ids.shape[1],
        batch_size,
        bucketed=not reads_padding(pool, cfg.causal),
        step=BUCKET_STEP,
    )
    for idx, width in schedule:
        rows = np.resize(idx, batch_size)
        got = class_probs(params, ids[rows, :width], lengths[rows], cfg=cfg, pool=pool)
        out[idx] = np.asarray(got)[: len(idx)]
    return out


def predict_proba(
    model: GPTModel,
    params,
    tokenizer,
    texts: list[str],
    max_length: int,
    pool: str,
    batch_size: int = 16,
) -> np.ndarray:
    """Class probabilities [N, C] for raw texts (encoded as in training). Prefer
    ``Classifier``, which reads ``max_length`` and ``pool`` from the saved run."""
    texts = _check_texts(texts)
    cfg = model.cfg
    length = min(max_length, cfg.context_length)
    data, _ = _encode_texts(tokenizer, texts, length, cfg.vocab_size)
    return _probs(cfg, params, data.ids, data.lengths, check_pool(pool), batch_size)


@dataclass
class Predictions:
    """``labels``: predicted class name per text (the most probable class);
    ``probs`` [N, C]: class probabilities, columns in ``class_names`` order;
    ``truncated`` [N] bool: the text had more than ``max_length`` tokens and only its
    first ``max_length`` were read."""

    labels: list[str]
    probs: np.ndarray
    truncated: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_ids(self) -> np.ndarray:
        """[N] int: index of the predicted class."""
        return self.probs.argmax(axis=1)


class Classifier:
    """A trained classifier ready to use: ``Classifier.load(run_dir).predict(texts)``."""

    def __init__(self, spec: ClassifierConfig, params, tokenizer):
        if not isinstance(spec, ClassifierConfig):
            raise TypeError(f"Classifier needs a ClassifierConfig, got {type(spec).__name__}")
        check_params(params, spec.model, "Classifier")
        self.spec = spec
        # On the device once (else host arrays are copied there at every batch), and
        # committed to it: committed and uncommitted arrays (restored vs freshly
        # initialised weights) are different jit cache keys.
        self.params = jax.device_put(params, jax.devices()[0])
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Classifier:
        """The classifier saved in ``run_dir`` (weights, config and tokenizer)."""
        from gpt2_jax.data.tokenizer import get_tokenizer

        _, params, spec = load_classifier(run_dir)
        return cls(spec, params, get_tokenizer(Path(run_dir)))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"Classifier(labels={s.labels}, pool={s.pool!r}, max_length={s.max_length}, "
            f"emb_dim={s.model.emb_dim}, n_layers={s.model.n_layers})"
        )

    def _run(self, texts, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        texts = _check_texts(texts)
        s = self.spec
        data, truncated = _encode_texts(
            self.tokenizer, texts, s.max_length, s.model.vocab_size, s.truncate
        )
        probs = _probs(s.model, self.params, data.ids, data.lengths, s.pool, batch_size)
        return probs, truncated

    def predict_proba(self, texts, batch_size: int = 16) -> np.ndarray:
        """[N, C] class probabilities (columns in ``labels`` order)."""
        return self._run(texts, batch_size)[0]

    def predict(self, texts, batch_size: int = 16) -> Predictions:
        """Most probable label, probabilities and truncation flag of each text."""
        probs, truncated = self._run(texts, batch_size)
        names = [self.labels[k] for k in probs.argmax(axis=1)]
        return Predictions(names, probs, truncated, self.labels)
