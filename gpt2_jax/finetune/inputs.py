"""A run's inputs, read before anything heavy: the labelled data (read, checked against
each other, split), the backbone's files and sizes, the encoded splits and the checked
training plan; and how the log describes them."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_jax.data import checks, chunks, encoding, sms, tables
from gpt2_jax.data import splits as splitting
from gpt2_jax.data.chunks import Chunking
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.finetune import missing, multilabel
from gpt2_jax.finetune.config import DataConfig, ModelConfig, RunConfig
from gpt2_jax.finetune.job import TrainingPlan
from gpt2_jax.model.config import OPENAI_TO_CONFIG, GPTConfig, settings_for_size
from gpt2_jax.model.pooling import POOL_WORDS, reads_padding
from gpt2_jax.training.loss import class_weights
from gpt2_jax.training.multilabel import positive_weights
from gpt2_jax.training.partition import resolve_trainable
from gpt2_jax.weights.download import download_gpt2
from gpt2_jax.weights.hub import fetch_hf_repo
from gpt2_jax.weights.pretrained import read_folder_settings
from gpt2_jax.weights.synthetic import random_weights_seed

logger = logging.getLogger(__name__)


def _backbone_files(m: ModelConfig) -> tuple[dict, Path]:
    """``(settings, folder with the config, the weights and the BPE files)``, in
    OpenAI's or Hugging Face's layout, downloading or fetching GPT-2 first if needed;
    nothing heavy is read yet."""
    model_dir = Path(m.model_dir) if m.model_dir else None
    if m.hf_repo is not None:
        model_dir = fetch_hf_repo(m.hf_repo, revision=m.hf_revision, offline=m.offline or None)
    if m.weights == "random":
        if model_dir is not None and model_dir.is_dir():
            try:
                return read_folder_settings(model_dir), model_dir
            except FileNotFoundError:
                pass  # a folder without a model: GPT-2's sizes, its BPE files if any
        return settings_for_size(m.model_size), model_dir or Path(m.models_dir) / m.model_size
    if model_dir is None:
        model_dir = download_gpt2(m.model_size, m.models_dir, offline=m.offline or None)
    return read_folder_settings(model_dir), model_dir


@dataclasses.dataclass
class LabelledData:
    """The splits as frames (``text``, ``label``, ``where``, ``y``) and the class names."""

    splits: splitting.Splits
    classes: tuple[str, ...]
    files: dict[str, str]
    rows: int
    joined: list[dict]  # records that quoting joined over several lines (SMS format)
    duplicates: checks.DuplicateReport  # texts shared between splits (before any drop)
    dropped: dict[str, int]  # rows left out of val/test with --drop-duplicates
    sums: dict[str, str] = dataclasses.field(default_factory=dict)  # SHA-256 of non-files
    multi_label: bool = False  # label sets: frames hold ``labels`` (finetune.multilabel)


def read_data(d: DataConfig, seed: int, offline: bool = False) -> LabelledData:
    """Read, order the classes, split: every data error comes before the weights load."""
    if d.is_multi_label():
        sets, labels, files, rows, shared, left_out = multilabel.read_label_data(d, seed)
        return LabelledData(sets, labels, files, rows, [], shared, left_out, multi_label=True)
    if d.dataset is not None:
        from gpt2_jax.finetune.dataset_inputs import read_dataset_data

        return read_dataset_data(d, seed)
    if d.data_file is None:
        path = sms.fetch_sms_spam(d.data_dir, offline=offline or None)
        fmt = "sms"
    elif Path(d.data_file).suffix.lower() == ".zip":  # the SMS Spam Collection's zip
        path, fmt = sms.sms_from_zip(d.data_file, d.data_dir), "sms"
    else:
        path, fmt = Path(d.data_file), d.data_format

    def read(p: Path, fmt: str):
        return tables.read_table(
            p,
            fmt=fmt,
            text_column=d.text_column,
            label_column=d.label_column,
            sms_quoting=d.quoting,
        )

    df = read(path, fmt)
    checks.check_labels(
        df["label"], df["where"], explicit=d.class_order(), source=str(path), column=d.label_column
    )
    classes = splitting.class_names(df["label"], d.class_order(), where=df["where"])
    absent = sorted(set(classes) - set(df["label"]))
    if absent:
        raise ValueError(
            f"--labels names {', '.join(map(repr, absent))}, which never occur(s) "
            f"in {path}; list only the classes the data has"
        )
    df = splitting.add_class_ids(df, classes, what="training")
    cut_val, cut_test = d.val_file is None, d.test_file is None
    splits = splitting.split(
        df,
        *d.cut_sizes(len(df), cut_val, cut_test),
        seed,
        d.balance,
        d.stratify,
        holdout_at=d.holdout_row() if cut_val and cut_test else None,
    )
    extra = {}
    for name, file in (("val", d.val_file), ("test", d.test_file)):
        if file is not None:  # by their own extension unless --format says otherwise
            frame = read(Path(file), "auto" if d.data_format == "auto" else fmt)
            extra[name] = splitting.add_class_ids(frame, classes, what="training")
    splits = dataclasses.replace(splits, **extra)
    splits, duplicates, dropped = checks.count_duplicates(splits, drop=d.drop_duplicates)
    files = {"train": str(path), "val": d.val_file or str(path), "test": d.test_file or str(path)}
    joined = df.attrs.get("joined", [])
    return LabelledData(splits, classes, files, len(df), joined, duplicates, dropped)


@dataclasses.dataclass(frozen=True, eq=False)
class Inputs:
    """What a run reads before it claims its folder (cheap, so every data error comes
    before 500 MB of weights): the data, the backbone's files and sizes, the encoded
    splits and the checked training plan."""

    labelled: LabelledData
    settings: dict
    model_dir: Path
    model_cfg: GPTConfig
    length: int  # every text is padded or cut to this many tokens
    patterns: tuple[str, ...]  # what trains
    plan: TrainingPlan
    random_seed: int | None  # the seed of make_checkpoint's random weights, if those
    chunking: Chunking | None = None  # --long-texts chunk: how long texts are cut


def read_inputs(cfg: RunConfig) -> Inputs:
    """Step 1: read and split the data, find the backbone, encode, check the plan."""
    m, tc = cfg.model, cfg.train
    labelled = missing.data_first(lambda: read_data(cfg.data, tc.seed, m.offline), m)
    classes, splits = labelled.classes, labelled.splits
    targets = multilabel.targets(splits, classes) if labelled.multi_label else None
    if targets is not None:
        weights = positive_weights(tc.class_weights, targets["train"], classes)
    else:
        weights = class_weights(tc.class_weights, splits.train["y"].to_numpy(), classes)
    settings, model_dir = missing.model_files(lambda: _backbone_files(m), m)
    model_cfg = m.gpt_config(settings, len(classes))
    tokenizer = get_tokenizer(model_dir, offline=m.offline or None)
    named_lengths: dict[str, int | None] = {"longest": None, "context": model_cfg.context_length}
    ml = cfg.data.max_length
    max_length = named_lengths[ml] if isinstance(ml, str) else ml
    chunking = None
    encoded: dict[str, encoding.Encoded]
    if cfg.data.long_texts == "chunk":
        args = (splits, tokenizer, model_cfg.context_length, max_length, model_cfg.vocab_size)
        encoded, chunking = chunks.chunk_splits(*args, cfg.data.chunking)  # type: ignore[assignment]
        length = chunking.length
    else:
        encoded, length = encoding.encode_splits(
            splits,
            tokenizer,
            model_cfg.context_length,
            max_length,
            vocab_size=model_cfg.vocab_size,
            truncate=cfg.data.truncate,
        )
    if targets is not None:  # each split's label sets as [N, K] 0/1 (never chunked)
        encoded = {k: dataclasses.replace(v, labels=targets[k]) for k, v in encoded.items()}
    patterns = resolve_trainable(tc.trainable, model_cfg.n_layers, m.weights == "pretrained")
    plan = TrainingPlan(
        encoded,
        classes,
        tc,
        cfg.speed,
        m.pool,
        weights,
        chunk_pool=chunking.pool if chunking else None,
        multi_label=labelled.multi_label,
    )
    random_seed = random_weights_seed(model_dir) if m.weights == "pretrained" else None
    return Inputs(
        labelled,
        settings,
        model_dir,
        model_cfg,
        length,
        tuple(patterns),
        plan,
        random_seed,
        chunking,
    )


def describe_inputs(cfg: RunConfig, inputs: Inputs, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Step 3: say what the run reads (the log), and the record's ``data`` section."""
    m, tc, labelled = cfg.model, cfg.train, inputs.labelled
    classes, model_dir, length = labelled.classes, inputs.model_dir, inputs.length
    logger.info(f"run folder: {run_dir}" + (" (resuming)" if resume else ""))
    logger.info(
        f"GPT-2 from {model_dir}"
        + (f" (Hub {m.hf_repo}, commit {model_dir.name})" if m.hf_repo else "")
    )
    seed = inputs.random_seed
    if seed is not None:
        logger.warning(
            f"WARNING: {model_dir} holds random weights written by make_checkpoint (seed "
            f"{seed}), not OpenAI's GPT-2: the steps and timings are real, the accuracy is not"
        )
    logger.info(f"settings: {inputs.settings}")
    logger.info("config mapping: " + ", ".join(f"{k} -> {v}" for k, v in OPENAI_TO_CONFIG.items()))
    logger.info(f"model config: {inputs.model_cfg}")
    logger.info(
        f"data: {labelled.rows} rows in {labelled.files['train']}; classes (id order) {list(classes)}"
    )
    data_info: dict[str, Any] = {
        "files": labelled.files,
        "rows": labelled.rows,
        "classes": list(classes),
        "joined": labelled.joined,
        "max_length": length,
        "held_out_at": labelled.splits.held_out_at,  # shuffled row where val starts
        "duplicates": labelled.duplicates.as_dict(),
        "duplicates_dropped": labelled.dropped,
    }
    if labelled.multi_label:
        data_info["multi_label"] = True  # classes: the labels of the sets
    if labelled.duplicates.rows:
        logger.info(_duplicates_line(labelled))
    if labelled.joined:
        logger.info(
            f"quoting joined {len(labelled.joined)} message(s) over several lines: "
            + ", ".join(f"{j['where']} ({j['lines']} lines)" for j in labelled.joined[:5])
            + (" ..." if len(labelled.joined) > 5 else "")
            + " (--quoting none reads one message per line)"
        )
    data_info["splits"] = _describe_splits(inputs, cfg.data.truncate)
    if inputs.chunking is not None:
        data_info["chunking"] = inputs.chunking.to_dict()
        logger.info(chunks.chunking_line(inputs.chunking))
    batches = inputs.plan.batches
    data_info["batches_per_epoch"] = batches
    padded = reads_padding(m.pool, inputs.model_cfg.causal)
    width = f"padded to {length} tokens" if padded else f"padded to at most {length} tokens"
    logger.info(f"{width}; batch {tc.batch_size} -> {batches} batches per epoch")
    if not padded:
        logger.info(
            "  (each batch only to its longest text, in 32-token steps; packed rows in the prefix)"
        )
    logger.info(f"pool {m.pool}: the head reads {POOL_WORDS[m.pool]}")
    warning = padding_warning(inputs.plan.encoded, length, padded)
    if warning:
        logger.info(warning)
    return data_info


def _describe_splits(inputs: Inputs, truncate: str) -> dict[str, dict[str, Any]]:
    """Each split's size, class counts and truncated texts: logged, and for the record."""
    classes, length, out = inputs.labelled.classes, inputs.length, {}
    for name, split in inputs.plan.encoded.items():
        labels = split.labels  # [N] class ids, or [N, K] label sets
        counts = (
            labels.sum(axis=0) if labels.ndim == 2 else np.bincount(labels, minlength=len(classes))
        ).tolist()
        out[name] = {"n": len(split), **dict(zip(classes, counts)), "truncated": split.truncated}
        cut = (
            f", {split.truncated} truncated to {length} tokens "
            f"(each keeps {encoding.kept_words(length, truncate)}; --truncate)"
            if split.truncated
            else ""
        )
        if isinstance(split, chunks.Chunked) and inputs.chunking is not None:
            out[name].update(chunked=split.chunked, chunks=split.chunks)
            cut = f"; {chunks.chunk_words(split, inputs.chunking)}"
        logger.info(
            f"{name:5}: {len(split):5} texts ("
            + " / ".join(f"{c} {k}" for k, c in zip(classes, counts))
            + ")"
            + cut
        )
    return out


def _duplicates_line(labelled: LabelledData) -> str:
    """The texts validation and test share with earlier splits, and what was done."""
    line = labelled.duplicates.line()
    if labelled.dropped:
        return line + "; left out: " + ", ".join(f"{k} {v}" for k, v in labelled.dropped.items())
    return line + " (their scores partly measure memory; --drop-duplicates leaves them out)"


def padding_warning(encoded: dict, length: int, padded: bool, limit: float = 2.0) -> str | None:
    """One line when padding multiplies the work by more than ``limit``: every row is
    ``length`` wide (a pool that reads padding) while the texts are much shorter."""
    real = sum(int(split.lengths.sum()) for split in encoded.values())
    rows = sum(len(split.ids) for split in encoded.values())  # chunks, when chunked
    if not padded or not real:
        return None
    factor = rows * length / real
    if factor <= limit:
        return None
    return (
        f"note: the texts hold {real / rows:.0f} real tokens on average and every row is "
        f"{length} wide, so {factor:.1f}x the work goes to padding; --pool last-real "
        "computes real tokens only (faster, and the classifier exports to transformers), "
        "or lower --max-length"
    )
