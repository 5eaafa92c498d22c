"""`python -m experiments.spam`: Fine-tune GPT-2 to tell SMS spam from ham: the lab of chapter 6, in one command.

The command lives in `gpt2_jax/commands/spam.py`; this alias keeps the short name.
"""

import sys

from gpt2_jax.commands.spam import main

if __name__ == "__main__":
    sys.exit(main())
