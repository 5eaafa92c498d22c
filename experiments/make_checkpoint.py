"""`python -m experiments.make_checkpoint`: Write a GPT-2 folder in OpenAI's exact layout with random weights (for offline work).

The command lives in `gpt2_jax/commands/make_checkpoint.py`; this alias keeps the short name.
"""

import sys

from gpt2_jax.commands.make_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
