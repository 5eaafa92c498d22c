"""Fine-tune GPT-2 to tell SMS spam from ham: the lab of chapter 6, in one command.

    python -m experiments.spam                              # the lab's first run
    python -m experiments.spam --train-size 1000 --lr 1e-4   # the lab's second run

The same code as ``python -m experiments.finetune`` with the lab's data and defaults;
the logic lives in ``gpt2_jax.finetune.run`` and the flags come from its config classes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gpt2_jax.commands.presets import LAB  # the lab's settings, read in the SMS format
from gpt2_jax.finetune.cli import main as cli_main
from gpt2_jax.finetune.config import RunConfig

DESCRIPTION = (
    "Fine-tune GPT-2 on the SMS Spam Collection: replace the LM head by a 2-class head, "
    "train the last block, final LayerNorm and head with AdamW and a class-weighted loss, "
    "and report loss, accuracy and spam recall every epoch. Downloads GPT-2 and the data on "
    "first use; offline, point it at local files."
)
EPILOG = (
    "Results go to RUNS_ROOT/spam-<size>-<time>/ (or --run-dir): metrics.json, "
    "config.json, loss.png, accuracy.png, spam_recall.png and the classifier, which "
    "`python -m experiments.classify --run DIR TEXT` uses."
)


def _sms_file(cfg: RunConfig) -> None:
    """The lab reads its file in the SMS format; a table is for experiments.finetune."""
    f, fmt = cfg.data.data_file, cfg.data.data_format
    if f and fmt == "sms" and Path(f).suffix.lower() in (".csv", ".tsv", ".jsonl", ".parquet"):
        raise ValueError(
            f"--data-file {f}: the lab reads the SMS Spam Collection format; for "
            "a table with --text-column/--label-column use `python -m "
            "experiments.finetune` (or --format)"
        )


def parser():
    from gpt2_jax.finetune.cli import parser as make

    return make("python -m experiments.spam", DESCRIPTION, EPILOG, LAB)


def main(argv=None) -> int:
    return cli_main(
        argv,
        prog="python -m experiments.spam",
        description=DESCRIPTION,
        epilog=EPILOG,
        defaults=LAB,
        check=_sms_file,
    )


if __name__ == "__main__":
    sys.exit(main())
