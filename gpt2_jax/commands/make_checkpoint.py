"""Write a GPT-2 folder in OpenAI's exact layout with random weights (for offline work).

    python -m experiments.make_checkpoint --size 124M --out models/124M \\
        --bpe-dir ../shared/data/gpt2_bpe

Sizes other than OpenAI's four: --n-embd/--n-layer/... override the table.
"""

from __future__ import annotations

import argparse

from gpt2_jax.model.config import MODEL_SIZES, settings_for_size
from gpt2_jax.weights.synthetic import write_openai_model_dir


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.make_checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--size", default="124M", choices=list(MODEL_SIZES))
    p.add_argument("--out", required=True, help="folder to write (created)")
    p.add_argument("--bpe-dir", default=None, help="folder with encoder.json and vocab.bpe to copy")
    p.add_argument("--seed", type=int, default=0)
    for key in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    args = p.parse_args(argv)
    settings = settings_for_size(args.size)
    settings.update({k: v for k, v in vars(args).items() if k.startswith("n_") and v is not None})
    out = write_openai_model_dir(args.out, settings, seed=args.seed, bpe_dir=args.bpe_dir)
    print(f"wrote {out} with settings {settings}")


if __name__ == "__main__":
    main()
