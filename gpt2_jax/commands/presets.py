"""The run settings each fine-tuning command starts from (its flags' defaults), here so that
``experiments.search`` can start from either without one command importing another."""

from __future__ import annotations

import dataclasses

from gpt2_jax.finetune.config import RunConfig

# The lab (experiments.spam): the config classes' defaults are the lab's; its data file is
# read in the SMS format whatever it is called.
LAB = dataclasses.replace(
    RunConfig(), data=dataclasses.replace(RunConfig().data, data_format="sms")
)

# Your own data (experiments.finetune): 80 % train, 10 % validation, the rest test, classes
# kept in proportion; the head reads the last real token (the lab's `--pool last` reads the
# padding after it): faster (no padding computed), exportable to transformers, and better
# in the book's table (row 16 against row 1).
DEFAULTS = dataclasses.replace(
    RunConfig(),
    data=dataclasses.replace(
        RunConfig().data, train_size=0.8, val_size=0.1, test_size="rest", stratify=True
    ),
    model=dataclasses.replace(RunConfig().model, pool="last-real"),
)

PRESETS = {"spam": LAB, "finetune": DEFAULTS}
