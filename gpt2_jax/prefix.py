"""The frozen prefix, computed once.

With dropout off, embeddings and the frozen blocks ``h0 .. h{k-1}`` are a fixed
function of the token ids, so their output (the input of block k) is computed once
per message and training runs only blocks ``k ..`` plus the final norm and head.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from .config import GPTConfig
from .model import Block, GPTModel
from .tree import named_leaves

BUCKET_STEP = 32  # training/eval batches are padded to a multiple of this many tokens
PREFIX_STEP = 8  # the prefix pass goes in length order, so finer buckets pay there


def bucket_length(longest: int, full: int, step: int = BUCKET_STEP) -> int:
    """Smallest multiple of ``step`` >= ``longest`` (at most ``full``): few shapes to
    compile, little padding."""
    return min(full, max(step, -(-longest // step) * step))


def prefix_batch_size(bucketed: bool) -> int:
    """Rows per prefix batch: short length-sorted batches waste less padding."""
    return 16 if bucketed else 32


def prefix_schedule(lengths: np.ndarray, full: int, batch_size: int,
                    bucketed: bool, step: int = PREFIX_STEP) -> list[tuple[np.ndarray, int]]:
    """``(row indices, width)`` of each batch of the prefix pass. Bucketed: rows in
    length order, each batch cut to its bucket length; else every batch is ``full`` wide."""
    order = np.argsort(lengths, kind="stable") if bucketed else np.arange(len(lengths))
    batches = []
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        width = bucket_length(int(lengths[idx].max()), full, step) if bucketed else full
        batches.append((idx, width))
    return batches


def compute_prefix(cfg: GPTConfig, params, ids: np.ndarray, lengths: np.ndarray, stop: int,
                   *, batch_size: int | None = None, bucketed: bool = False,
                   matmul_dtype: str | None = None, desc: str = "prefix",
                   log=None, out: np.ndarray | None = None) -> np.ndarray:
    """Hidden states entering block ``stop``: [N, L, E] float32.

    ``bucketed`` (only valid when no later computation reads padding positions, i.e.
    last-real pooling): see ``prefix_schedule``; positions past a message's bucket are
    left zero. ``log``: where to report progress every tenth of the work when no
    progress bar can be shown (output not a terminal, e.g. a logged batch job).
    ``out``: where to write (e.g. a memory-mapped file for data larger than memory).
    """
    batch_size = batch_size or prefix_batch_size(bucketed)
    cfg = dataclasses.replace(cfg, matmul_dtype=matmul_dtype)
    # Embeddings, then one jitted block applied `stop` times: one block compiles per
    # batch width instead of the whole unrolled prefix.
    embed = jax.jit(lambda p, x: GPTModel(cfg).apply({"params": p}, x, stop=0))
    block = jax.jit(lambda p, x: Block(cfg).apply({"params": p}, x))

    def run(p, x):
        x = embed(p, x)
        for i in range(stop):
            x = block(p[f"h{i}"], x)
        return x

    if out is None:
        out = np.zeros((*ids.shape, cfg.emb_dim), np.float32)
    schedule = prefix_schedule(lengths, ids.shape[1], batch_size, bucketed)
    pending = []
    bar = tqdm(schedule, desc=desc, unit="batch", leave=False, disable=None)
    report = progress_lines(len(schedule), desc, log) if bar.disable and log else None
    for idx, width in bar:
        if report:
            report()
        rows = np.resize(idx, batch_size)  # fixed batch shape: repeat rows, drop below
        pending.append((idx, width, run(params, ids[rows, :width])))
        if len(pending) > 2:  # keep a couple of batches in flight, bound the memory
            _store(out, *pending.pop(0))
    for item in pending:
        _store(out, *item)
    return out


def progress_lines(total: int, desc: str, log):
    """A callable to call once per item: logs ``desc: k/total (p %), t s`` at each tenth."""
    start, count = time.perf_counter(), [0]
    marks = {max(1, round(total * k / 10)) for k in range(1, 11)}

    def tick():
        count[0] += 1
        if count[0] in marks:
            log(f"{desc}: {count[0]}/{total} batches ({100 * count[0] // total} %), "
                f"{time.perf_counter() - start:.0f} s")
    return tick


def _store(out, idx, width, hidden):
    out[idx, :width] = np.asarray(hidden)[: len(idx)]


def prefix_key(cfg: GPTConfig, params, ids: np.ndarray, lengths: np.ndarray, stop: int,
               bucketed: bool, matmul_dtype: str | None) -> str:
    """Hash of everything the prefix output depends on: the weights it reads (embeddings
    and blocks before ``stop``), the token ids and lengths, and how it is computed."""
    h = hashlib.sha256()
    h.update(repr((cfg.emb_dim, cfg.n_heads, stop, bucketed, matmul_dtype, ids.shape)).encode())
    for name, leaf in sorted(named_leaves(params).items()):
        top = name.split("/")[0]
        if top in ("wte", "wpe") or (top[0] == "h" and top[1:].isdigit() and int(top[1:]) < stop):
            h.update(name.encode())
            h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    h.update(np.ascontiguousarray(ids).tobytes())
    h.update(np.ascontiguousarray(lengths).tobytes())
    return h.hexdigest()[:24]


def cached_prefix(cache_dir: str | os.PathLike | None, cfg: GPTConfig, params, ids, lengths,
                  stop: int, *, bucketed: bool = False, matmul_dtype: str | None = None,
                  desc: str = "prefix", log=print) -> np.ndarray:
    """``compute_prefix``, kept in ``cache_dir`` as ``prefix-<key>.npy`` (read back
    memory-mapped) so reruns and learning-rate sweeps skip it. No ``cache_dir``: memory only."""
    if cache_dir is None:
        return compute_prefix(cfg, params, ids, lengths, stop, bucketed=bucketed,
                              matmul_dtype=matmul_dtype, desc=desc, log=log)
    key = prefix_key(cfg, params, ids, lengths, stop, bucketed, matmul_dtype)
    path = Path(cache_dir) / f"prefix-{key}.npy"
    if path.is_file():
        log(f"{desc}: reusing {path}")
        return np.load(path, mmap_mode="r")
    out = compute_prefix(cfg, params, ids, lengths, stop, bucketed=bucketed,
                         matmul_dtype=matmul_dtype, desc=desc, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        np.save(f, out)
    os.replace(part, path)  # a crash never leaves a half cache file under the final name
    log(f"{desc}: saved to {path}")
    return out


def prefix_inputs(cfg: GPTConfig, params, data: dict, stop: int, *, bucketed: bool,
                  matmul_dtype: str | None = None, cache_dir: str | os.PathLike | None = None,
                  disk_dir: str | os.PathLike | None = None, log=print) -> dict[str, np.ndarray]:
    """The hidden states entering block ``stop`` for every split of ``data``
    (``{name: Encoded}``): in memory, or with ``disk_dir`` written straight into
    memory-mapped ``disk_dir/prefix-<split>.npy`` files (for data whose prefix outputs
    do not fit in memory; the OS pages them in as batches are read). ``cache_dir``
    keeps them for later runs instead (see ``cached_prefix``), also memory-mapped."""
    out = {}
    for name, split in data.items():
        desc = f"prefix {name}"
        if cache_dir is not None or disk_dir is None:
            out[name] = cached_prefix(cache_dir, cfg, params, split.ids, split.lengths, stop,
                                      bucketed=bucketed, matmul_dtype=matmul_dtype, desc=desc,
                                      log=log)
            continue
        path = Path(disk_dir) / f"prefix-{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        target = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                           shape=(*split.ids.shape, cfg.emb_dim))
        compute_prefix(cfg, params, split.ids, split.lengths, stop, bucketed=bucketed,
                       matmul_dtype=matmul_dtype, desc=desc, log=log, out=target)
        target.flush()
        out[name] = np.load(path, mmap_mode="r")
    return out
