"""`python -m experiments.export`: Write a trained classifier, or a GPT-2 folder, in Hugging Face's format.

The command lives in `gpt2_jax/commands/export.py`; this alias keeps the short name.
"""

import sys

from gpt2_jax.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
