"""Write a GPT-2 folder in OpenAI's exact layout with random weights (for offline work).

    python -m experiments.make_checkpoint --size 124M --out models/random-124M \\
        --bpe-dir ~/Downloads/gpt2_bpe      # a folder holding encoder.json and vocab.bpe

Sizes other than OpenAI's four: --n-embd/--n-layer/... override the table (a tiny model
for quick tries: --n-layer 2 --n-embd 64 --n-head 2 --n-ctx 128). The folder gets a
random_weights.json, so runs on it say that the weights are random; an existing folder is
never written over unless --overwrite is given (it may hold OpenAI's weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpt2_jax.model.config import MODEL_SIZES, settings_for_size
from gpt2_jax.weights.synthetic import write_openai_model_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.make_checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--size", default="124M", choices=list(MODEL_SIZES))
    p.add_argument("--out", required=True, help="folder to write (created)")
    p.add_argument("--bpe-dir", default=None, help="folder with encoder.json and vocab.bpe to copy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--overwrite", action="store_true", help="write into --out even if it holds files"
    )
    for key in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    args = p.parse_args(argv)
    settings = settings_for_size(args.size)
    settings.update({k: v for k, v in vars(args).items() if k.startswith("n_") and v is not None})
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: {out} is a file; --out takes a folder to write", file=sys.stderr)
        return 1
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        print(
            f"error: {out} exists and is not an empty folder (it may hold OpenAI's weights); "
            "choose another --out, e.g. models/random-124M, or give --overwrite",
            file=sys.stderr,
        )
        return 1
    write_openai_model_dir(out, settings, seed=args.seed, bpe_dir=args.bpe_dir)
    print(f"wrote {out} with settings {settings} (random weights, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
