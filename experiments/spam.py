"""Fine-tune GPT-2 to tell SMS spam from ham: the lab of chapter 6, in one command.

    python -m experiments.spam                              # the lab's first run
    python -m experiments.spam --train-size 1000 --lr 1e-4   # the lab's second run

The logic lives in ``gpt2_jax.finetune``; this file only turns flags into a RunConfig.
"""
from __future__ import annotations

import argparse
import sys

from gpt2_jax.config import MODEL_SIZES
from gpt2_jax.finetune import RunConfig, resume_config, run
from gpt2_jax.pooling import POOLS
from gpt2_jax.train import TrainConfig


def _test_size(text: str) -> int | None:
    return None if text == "all" else int(text)


def _class_weights(text: str):
    if text == "auto":
        return ()
    if text == "none":
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or HAM,SPAM numbers, got {text!r}")
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected two positive weights HAM,SPAM, got {text!r}")
    return values


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except for on/off switches and unset options."""

    def _get_help_string(self, action):
        if isinstance(action.default, bool) or action.default is None:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    d, t = RunConfig(), TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m experiments.spam",
        description="Fine-tune GPT-2 on the SMS Spam Collection: replace the LM head by a "
        "2-class head, train the last block, final LayerNorm and head with AdamW and a "
        "class-weighted loss, and report loss, accuracy and spam recall every epoch. "
        "Downloads GPT-2 and the data on first use; offline, point it at local files.",
        epilog="Results go to RUNS_ROOT/spam-<size>-<time>/ (or --run-dir): metrics.json, "
        "loss.png, accuracy.png, spam_recall.png and the classifier, which "
        "`python -m experiments.classify --run DIR TEXT` uses.",
        formatter_class=_Help,
    )
    g = p.add_argument_group("model")
    g.add_argument("--model-size", default=d.model_size, choices=list(MODEL_SIZES))
    g.add_argument("--models-dir", default=d.models_dir,
                   help="cache of GPT-2 folders; files are downloaded into MODELS_DIR/SIZE")
    g.add_argument("--model-dir", default=None,
                   help="use this GPT-2 folder as it is (hparams.json, model.ckpt.*, BPE files)")
    g.add_argument("--weights", default=d.weights, choices=["pretrained", "random"],
                   help="random: GPT-2's sizes with random init; then every layer trains "
                   "unless --trainable says otherwise")
    g.add_argument("--drop-rate", type=float, default=d.drop_rate)
    g = p.add_argument_group("data")
    g.add_argument("--data-file", default=None, help="a local SMSSpamCollection file")
    g.add_argument("--data-dir", default=d.data_dir, help="download cache for the dataset")
    g.add_argument("--train-size", type=int, default=d.train_size)
    g.add_argument("--val-size", type=int, default=d.val_size)
    g.add_argument("--test-size", type=_test_size, default=d.test_size,
                   help="a number, or 'all' for every row after validation")
    g.add_argument("--balance", action="store_true",
                   help="undersample ham to the number of spam messages before splitting")
    g.add_argument("--max-length", type=int, default=None,
                   help="pad/truncate to this many tokens (default: longest training message)")
    g.add_argument("--offline", action="store_true",
                   help="never touch the network; fail if a file is missing")
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=t.batch_size)
    g.add_argument("--epochs", type=int, default=t.epochs)
    g.add_argument("--lr", type=float, default=t.lr)
    g.add_argument("--weight-decay", type=float, default=t.weight_decay)
    g.add_argument("--seed", type=int, default=t.seed,
                   help="shuffle, head init and batch order; same seed, same results")
    g.add_argument("--trainable", action="append", default=None, metavar="REGEX",
                   help="parameter names to train, e.g. 'h11/.*' (repeatable; default: last "
                   "block, ln_f and head)")
    g.add_argument("--class-weights", type=_class_weights, default="auto", metavar="auto|none|H,S",
                   help="auto: n/(2*count) from the training labels")
    g.add_argument("--pool", default=t.pool, choices=POOLS,
                   help="classify from the last position (the lab's) or the last real token")
    g = p.add_argument_group("speed (all exact except --prefix-dtype bfloat16)")
    g.add_argument("--no-prefix-cache", dest="cache_prefix", action="store_false",
                   help="recompute the frozen blocks every step (the book's way) instead of "
                   "once per message")
    g.add_argument("--full-logits", dest="pooled_only", action="store_false",
                   help="compute every position in the last block, not just the pooled one")
    g.add_argument("--no-buckets", dest="buckets", action="store_false",
                   help="with --pool last-real, still pad every batch to the full length")
    g.add_argument("--prefix-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="matmul inputs of the frozen prefix (bfloat16: float32 accumulation)")
    g.add_argument("--prefix-cache-dir", default=None, metavar="DIR",
                   help="keep the frozen-prefix outputs in DIR (about 2.8 GB for the lab's "
                   "splits at 124M), keyed by weights, data and length, so a rerun or another "
                   "learning rate skips that pass")
    g = p.add_argument_group("output")
    g.add_argument("--runs-root", default=d.runs_root)
    g.add_argument("--run-dir", default=None)
    g.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, metavar="K",
                   help="keep the training state of the last K epochs in RUN_DIR/checkpoints "
                   "(trainable weights and Adam state: 80 MB each at 124M)")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="go on with an interrupted run from its last finished epoch, with the "
                   "settings it started with (give no other flags); the result equals an "
                   "uninterrupted run")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    train = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
                        weight_decay=args.weight_decay, seed=args.seed,
                        trainable=tuple(args.trainable or ()),
                        class_weights=args.class_weights, pool=args.pool,
                        cache_prefix=args.cache_prefix, pooled_only=args.pooled_only,
                        buckets=args.buckets, prefix_cache_dir=args.prefix_cache_dir,
                        prefix_dtype=None if args.prefix_dtype == "float32" else args.prefix_dtype)
    return RunConfig(
        model_size=args.model_size, models_dir=args.models_dir, model_dir=args.model_dir,
        weights=args.weights, drop_rate=args.drop_rate, data_file=args.data_file,
        data_dir=args.data_dir, train_size=args.train_size, val_size=args.val_size,
        test_size=args.test_size, balance=args.balance, max_length=args.max_length,
        offline=args.offline, train=train, runs_root=args.runs_root, run_dir=args.run_dir,
        overwrite=args.overwrite, keep_checkpoints=args.keep_checkpoints)


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.resume is not None:
        defaults = vars(p.parse_args([]))
        extra = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                 if k != "resume" and v != defaults[k]]
        if extra:
            p.error(f"--resume takes the settings the run started with; drop {' '.join(extra)}")
    try:
        cfg = config_from_args(args) if args.resume is None else None
    except ValueError as err:  # impossible flag combinations, before any heavy work
        p.error(str(err))
    try:
        if cfg is None:
            cfg = resume_config(args.resume)
        run(cfg, resume=args.resume is not None)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError,
            FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        for note in getattr(err, "__notes__", []):
            print(f"       {note}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
