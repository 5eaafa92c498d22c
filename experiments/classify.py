"""`python -m experiments.classify`: Classify texts with a classifier trained by ``experiments.spam`` or ``experiments.finetune``.

The command lives in `gpt2_jax/commands/classify.py`; this alias keeps the short name.
"""

import sys

from gpt2_jax.commands.classify import main

if __name__ == "__main__":
    sys.exit(main())
