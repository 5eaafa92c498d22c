"""`python -m experiments.grid`: Run the book's classification experiments (or your own rows) one after another and.

The command lives in `gpt2_jax/commands/grid.py`; this alias keeps the short name.
"""

import sys

from gpt2_jax.commands.grid import main

if __name__ == "__main__":
    sys.exit(main())
