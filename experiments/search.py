"""`python -m experiments.search`: search fine-tuning settings with Optuna (TPE, pruning).

The command lives in `gpt2_jax/commands/search.py`; this alias keeps the short name.
"""

import sys

from gpt2_jax.commands.search import main

if __name__ == "__main__":
    sys.exit(main())
