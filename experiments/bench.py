"""Benchmark the lab's fine-tuning: Hugging Face vs this project, in one run.

    python -m experiments.bench --model-dir models/124M \\
        --data-file ../shared/data/sms_spam_collection/SMSSpamCollection

Every variant does the same work: the lab's setup (GPT-2 124M layout, batch 16, the
first 2000 shuffled messages for training, last block + final norm + head trainable,
class-weighted loss, AdamW) for EPOCHS epochs, each followed by loss and accuracy on
the full train and test sets (1000 messages). Each variant runs in its own process
(so peak memory is its own). Hugging Face and this project without caches are timed
on --steps training steps and --steps evaluation batches and extrapolated; the cached
variants run whole, compile time included. Writes bench/<variant>.json and
bench/results.{json,md}; the table also takes in results already in that folder, so
variants can be run in separate calls.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gpt2_jax.util.machine import machine_name

VARIANTS = {
    # name: (description, pool, cached, prefix dtype)
    "hf": ("Hugging Face GPT2ForSequenceClassification (PyTorch)", "last", None, None),
    "book": ("gpt2_jax, no caches (the book's way)", "last", False, None),
    "last-f32": ("gpt2_jax, cached, --pool last", "last", True, None),
    "last-bf16": ("gpt2_jax, cached, --pool last, bf16 prefix", "last", True, "bfloat16"),
    "real-f32": ("gpt2_jax, cached, --pool last-real", "last-real", True, None),
    "real-bf16": ("gpt2_jax, cached, --pool last-real, bf16 prefix", "last-real", True, "bfloat16"),
}


def _setup(args):
    """Model config, lab params, encoded train/test data and class weights."""
    from gpt2_jax.data import encoding
    from gpt2_jax.data import splits as splitting
    from gpt2_jax.data.sms import read_sms_spam
    from gpt2_jax.data.tokenizer import get_tokenizer
    from gpt2_jax.model.config import GPTConfig
    from gpt2_jax.training.loss import class_weights_for
    from gpt2_jax.weights.pretrained import load_pretrained

    settings, params = load_pretrained(args.model_dir)
    cfg = GPTConfig.from_settings(settings, num_classes=2)
    df = read_sms_spam(args.data_file)
    df = splitting.add_class_ids(df, splitting.class_names(df["label"]))
    splits = splitting.split(df, 2000, 0, 1000, seed=123)
    encoded, _ = encoding.encode_splits(splits, get_tokenizer(args.model_dir), cfg.context_length)
    data = {"train": encoded["train"], "test": encoded["test"]}
    return cfg, params, data, class_weights_for(data["train"].labels, 2)


def _lab_setup(args):
    """What ``experiments.spam`` builds before training: the classifier tree and the
    partition of the lab's trainable leaves."""
    from gpt2_jax.classifier.classifier import with_class_head
    from gpt2_jax.training.partition import Partition, resolve_trainable
    from gpt2_jax.weights.openai import load_weights

    cfg, params, data, weights = _setup(args)
    tree, _ = with_class_head(load_weights(params), cfg, 123)
    partition = Partition.from_patterns(tree, resolve_trainable(["auto"], cfg.n_layers))
    return cfg, tree, partition, data, weights


def _extrapolate(epochs, n_train, n_test, batch, step_s, eval_s, fixed_s):
    steps = n_train // batch
    evals = -(-n_train // batch) + -(-n_test // batch)
    return {
        "epoch_s": steps * step_s,
        "eval_epoch_s": evals * eval_s,
        "total_s": fixed_s + epochs * (steps * step_s + evals * eval_s),
        "step_s": step_s,
        "eval_batch_s": eval_s,
        "extrapolated": True,
    }


def run_hf(args):
    import torch
    import transformers

    from gpt2_jax.weights.hf_torch import hf_config, hf_state_dict, load_into

    t0 = time.perf_counter()
    cfg, params, data, weights = _setup(args)
    torch.manual_seed(0)
    model = transformers.GPT2ForSequenceClassification(
        hf_config(cfg, num_labels=2, pad_token_id=50256)
    )
    load_into(model, hf_state_dict(params))
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [
        *model.transformer.h[-1].parameters(),
        *model.transformer.ln_f.parameters(),
        *model.score.parameters(),
    ]
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.1)
    w = torch.tensor(weights)
    train = data["train"]
    fixed = time.perf_counter() - t0

    def step(i):
        idx = slice(i * 16, (i + 1) * 16)
        model.train()
        logits = model(input_ids=torch.tensor(train.ids[idx], dtype=torch.long)).logits
        loss = torch.nn.functional.cross_entropy(
            logits, torch.tensor(train.labels[idx], dtype=torch.long), weight=w
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    def evaluate(i):
        model.eval()
        with torch.no_grad():
            model(input_ids=torch.tensor(train.ids[i * 16 : (i + 1) * 16], dtype=torch.long))

    step(0), evaluate(0)  # warm-up
    t = time.perf_counter()
    for i in range(args.steps):
        step(i + 1)
    step_s = (time.perf_counter() - t) / args.steps
    t = time.perf_counter()
    for i in range(args.steps):
        evaluate(i + 1)
    eval_s = (time.perf_counter() - t) / args.steps
    return _extrapolate(args.epochs, len(train), len(data["test"]), 16, step_s, eval_s, fixed)


def run_book(args):
    """The CLI's step with --no-prefix-cache --full-logits (``build_trainer``), timed."""
    import jax

    from gpt2_jax.finetune.config import SpeedConfig
    from gpt2_jax.finetune.job import TrainingJob, TrainingPlan, build_trainer
    from gpt2_jax.model.gpt import GPTModel
    from gpt2_jax.training.config import TrainConfig
    from gpt2_jax.training.train import Batch

    t0 = time.perf_counter()
    cfg, tree, partition, data, weights = _lab_setup(args)
    speed = SpeedConfig(prefix_cache=False, pooled_only=False)
    plan = TrainingPlan(data, ("ham", "spam"), TrainConfig(), speed, "last", weights)
    trainer = build_trainer(TrainingJob(plan, GPTModel(cfg), partition))
    frozen = partition.frozen(tree)
    state = trainer.init(partition.trainable(tree), frozen)
    del tree
    train = data["train"]

    def batch(i):
        return Batch(*(a[i * 16 : (i + 1) * 16] for a in (train.ids, train.lengths, train.labels)))

    state, metrics = trainer.train_step(state, frozen, batch(0))
    jax.block_until_ready(trainer.eval_step(state.trainable, frozen, batch(0)))
    fixed = time.perf_counter() - t0  # loading + both compiles
    t = time.perf_counter()
    for i in range(args.steps):
        state, metrics = trainer.train_step(state, frozen, batch(i + 1))
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t) / args.steps
    t = time.perf_counter()
    for i in range(args.steps):
        out = trainer.eval_step(state.trainable, frozen, batch(i + 1))
    jax.block_until_ready(out)
    eval_s = (time.perf_counter() - t) / args.steps
    return _extrapolate(args.epochs, len(train), len(data["test"]), 16, step_s, eval_s, fixed)


def run_cached(args, pool, prefix_dtype):
    """The CLI's own training function (``train_classifier``), the whole run."""
    from gpt2_jax.finetune.config import SpeedConfig
    from gpt2_jax.finetune.job import TrainingJob, TrainingPlan, train_classifier
    from gpt2_jax.model.gpt import GPTModel
    from gpt2_jax.training.config import TrainConfig

    t0 = time.perf_counter()
    cfg, tree, partition, data, weights = _lab_setup(args)
    speed = SpeedConfig(prefix_dtype=prefix_dtype or "float32")
    plan = TrainingPlan(
        data, ("ham", "spam"), TrainConfig(epochs=args.epochs), speed, pool, weights
    )
    _, history = train_classifier(TrainingJob(plan, GPTModel(cfg), partition), tree)
    total = time.perf_counter() - t0
    work = prefix_work(cfg, data, pool == "last-real")
    prefix_s = history[0]["prefix_seconds"]
    rate = matmul_rate(prefix_dtype, work["tokens_per_batch"], cfg.emb_dim)
    gflops = work["prefix_flops"] / prefix_s / 1e9
    return {
        "total_s": total,
        "prefix_s": prefix_s,
        "prefix_gflops": gflops,
        "matmul_gflops": rate,
        "prefix_share": gflops / rate,
        **work,
        "epoch_s": float(np.mean([h["train_seconds"] for h in history])),
        "eval_epoch_s": float(np.mean([h["eval_seconds"] for h in history])),
        "extrapolated": False,
        "final_test": {k2: history[-1]["test"][k2] for k2 in ("loss", "accuracy", "spam_recall")},
        "final_train_loss": history[-1]["train"]["loss"],
    }


def prefix_work(cfg, data: dict, bucketed: bool) -> dict:
    """What the prefix pass computes, as ``compute_prefix`` lays it out: token slots
    (packed rows with --pool last-real, full-width rows otherwise; distinct texts only)
    and flops of the frozen blocks: 24 E^2 per slot for the matmuls, plus the causal
    attention's two products, 2 E W (W + 1) per row of width W."""
    from gpt2_jax.training.prefix import PACK_TOKENS, PREFIX_ROWS, pack_groups, unique_texts

    k, e = cfg.n_layers - 1, cfg.emb_dim
    slots = real = flops = 0
    for split in data.values():
        first, _ = unique_texts(split.ids, split.lengths)
        full = split.ids.shape[1]
        if bucketed:  # (row width, rows computed) of each group, last batch filled up
            shapes = [
                (plan.width, -(-plan.rows // rows) * rows)
                for plan, rows in pack_groups(first, split.lengths, full)
            ]
        else:
            shapes = [(full, -(-len(first) // PREFIX_ROWS) * PREFIX_ROWS)]
        for width, rows in shapes:
            slots += rows * width
            flops += k * rows * (24 * e * e * width + 2 * e * width * (width + 1))
        real += int(split.lengths.sum())
    full = max(split.ids.shape[1] for split in data.values())
    return {
        "prefix_slots": slots,
        "real_tokens": real,
        "prefix_flops": flops,
        "tokens_per_batch": PACK_TOKENS if bucketed else PREFIX_ROWS * full,
    }


def matmul_rate(dtype: str | None, m: int, e: int, reps: int = 5) -> float:
    """GFLOP/s of the four matmuls of a block as the prefix runs them ([m, E] x [E, 3E],
    [E, E], [E, 4E], and [m, 4E] x [4E, E]; float32, or bfloat16 inputs with float32
    results), measured in this process: total flops over total time."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    total_flops = total_s = 0.0
    for k, n in ((e, 3 * e), (e, e), (e, 4 * e), (4 * e, e)):
        a = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
        b = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
        if dtype:
            a, b = a.astype(dtype), b.astype(dtype)
            f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        else:
            f = jax.jit(jnp.dot)
        f(a, b).block_until_ready()
        t = time.perf_counter()
        for _ in range(reps):
            out = f(a, b)
        out.block_until_ready()
        total_s += time.perf_counter() - t
        total_flops += 2 * m * k * n * reps
    return total_flops / total_s / 1e9


def one(args) -> None:
    from gpt2_jax.util.runtime import keep_freed_memory

    keep_freed_memory()  # as the command line does
    desc, pool, cached, dtype = VARIANTS[args.one]
    if args.one == "hf":
        result = run_hf(args)
    elif not cached:
        result = run_book(args)
    else:
        result = run_cached(args, pool, dtype)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result.update(variant=args.one, description=desc)
    Path(args.result).write_text(json.dumps(result, indent=2))


def table(results: dict, epochs: int) -> str:
    hf = results.get("hf", {}).get("total_s")
    lines = [
        f"| variant | s / training epoch | s / eval pass (train+test) | {epochs}-epoch run, s "
        "| × vs HF | peak RSS GiB | prefix GFLOP/s of the matmul rate for its shapes | test acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        if "error" in r:
            lines.append(f"| {r['description']} | failed: {r['error'][:80]} |||||||")
            continue
        gf = (
            f"{r['prefix_gflops']:.0f} of {r['matmul_gflops']:.0f} "
            f"({100 * r['prefix_gflops'] / r['matmul_gflops']:.0f} %)"
            if "prefix_gflops" in r
            else ""
        )
        acc = f"{r['final_test']['accuracy']:.4f}" if "final_test" in r else ""
        star = "*" if r["extrapolated"] else ""
        ratio = f"{hf / r['total_s']:.1f}" if hf else "n/a"
        lines.append(
            f"| {r['description']} | {r['epoch_s']:.1f}{star} | "
            f"{r['eval_epoch_s']:.1f}{star} | {r['total_s']:.0f}{star} | {ratio} | "
            f"{r['peak_rss_gib']:.2f} | {gf} | {acc} |"
        )
    lines.append("")
    lines.append(
        "\\* extrapolated from timed steps (see --steps); the others ran whole, "
        "compile and the one-off prefix pass included."
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model-dir",
        default="models/124M",
        help="GPT-2 folder in OpenAI's layout (random weights do for timing)",
    )
    p.add_argument("--data-file", default="../shared/data/sms_spam_collection/SMSSpamCollection")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument(
        "--steps",
        type=int,
        default=5,
        help="timed training steps and eval batches for extrapolated variants",
    )
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default="bench")
    p.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        return one(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.variants:
        print(f"running {name}: {VARIANTS[name][0]} ...", flush=True)
        path = out / f"{name}.json"
        cmd = [
            sys.executable,
            "-m",
            "experiments.bench",
            "--one",
            name,
            "--result",
            str(path),
            "--model-dir",
            args.model_dir,
            "--data-file",
            args.data_file,
            "--epochs",
            str(args.epochs),
            "--steps",
            str(args.steps),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            results[name] = {"description": VARIANTS[name][0], "error": proc.stderr[-2000:]}
            print(proc.stderr[-2000:], file=sys.stderr)
        else:
            results[name] = json.loads(path.read_text())
            print(f"  {results[name]['total_s']:.0f} s", flush=True)
    for name in VARIANTS:  # earlier runs' results in the same folder join the table
        path = out / f"{name}.json"
        if name not in results and path.is_file():
            results[name] = json.loads(path.read_text())
    results = {name: results[name] for name in VARIANTS if name in results}
    machine = machine_name()
    md = f"Machine: {machine}\n\n" + table(results, args.epochs)
    (out / "results.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    (out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
