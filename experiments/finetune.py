"""`python -m experiments.finetune`: Fine-tune GPT-2 as a classifier of your own labelled texts.

The command lives in `gpt2_jax/commands/finetune.py`; this alias keeps the short name.
"""

import sys

from gpt2_jax.commands.finetune import main

if __name__ == "__main__":
    sys.exit(main())
