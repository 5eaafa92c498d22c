"""`python -m experiments.serve`: Serve a trained classifier on this machine: a web page and a JSON API.

The command lives in `gpt2_jax/commands/serve.py`; this alias keeps the short name.
"""

import sys

from gpt2_jax.commands.serve import main

if __name__ == "__main__":
    sys.exit(main())
