"""Fine-tune GPT-2 as a classifier of your own labelled texts.

    python -m experiments.finetune --data-file tickets.csv --text-column body --label-column team

Reads CSV/TSV (with a header), JSON Lines or Parquet, any number of classes; cuts
train/validation/test from the file after a seeded shuffle (or takes --val-file and
--test-file); trains the lab's way (last block, final norm and a new class head, AdamW,
class-weighted loss), the head reading the last real token (--pool last-real), and reports per-class precision, recall and F1 every epoch.
"""

from __future__ import annotations

import sys

# 80/10/rest stratified splits; the head reads the last real token (why: presets.py)
from gpt2_jax.commands.presets import DEFAULTS
from gpt2_jax.finetune.cli import main as cli_main
from gpt2_jax.finetune.config import RunConfig

DESCRIPTION = (
    "Fine-tune GPT-2 to classify your own labelled texts (CSV/TSV with a header, "
    "JSON Lines, Parquet; any number of classes) with the method of the book's "
    "chapter 6. The SMS lab is `python -m experiments.spam`."
)
EPILOG = (
    "Results go to RUNS_ROOT/<data file>-<size>-<time>/ (or --run-dir): metrics.json, "
    "config.json, plots and the classifier, which `python -m experiments.classify "
    "--run DIR TEXT` uses. `--config RUN_DIR` reruns a run's settings."
)


def _needs_data(cfg: RunConfig) -> None:
    if cfg.data.data_file is None and cfg.data.dataset is None:
        raise ValueError(
            "--data-file is required, or --dataset (the SMS lab without it is "
            "`python -m experiments.spam`)"
        )


def main(argv=None) -> int:
    return cli_main(
        argv,
        prog="python -m experiments.finetune",
        description=DESCRIPTION,
        epilog=EPILOG,
        defaults=DEFAULTS,
        check=_needs_data,
    )


if __name__ == "__main__":
    sys.exit(main())
