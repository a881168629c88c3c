"""``python -m qkv`` (also what ``torchrun -m qkv`` runs)."""

import sys

from qkv.cli import main

if __name__ == "__main__":
    sys.exit(main())
