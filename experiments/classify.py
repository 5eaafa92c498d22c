"""Classify messages with a classifier trained by ``experiments.spam``.

    python -m experiments.classify --run runs/spam-124M-... "WINNER!! Claim your prize now"
    cat messages.txt | python -m experiments.classify --run DIR     # one message per line
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpt2_jax.classifier import load_classifier, predict_proba
from gpt2_jax.tokenizer import get_tokenizer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.classify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by experiments.spam")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="spam when P(spam) >= this")
    p.add_argument("texts", nargs="*", help="messages; none: read one per line from stdin")
    args = p.parse_args(argv)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        p.error("no messages given (as arguments or on stdin)")
    try:
        model, params, meta = load_classifier(args.run)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    tokenizer = get_tokenizer(Path(args.run))
    probs = predict_proba(model, params, tokenizer, texts, meta["max_length"], meta["pool"])
    for text, p_spam in zip(texts, probs[:, 1]):
        label = "spam" if p_spam >= args.threshold else "ham"
        print(f"{label}\t{p_spam:.4f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
