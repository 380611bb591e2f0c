"""`python -m sona`: the `sona` command (see sona.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
