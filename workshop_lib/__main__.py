"""``python -m workshop_lib ...``: see cli/__init__.py."""

import sys

from .cli import run

if __name__ == "__main__":
    sys.exit(run())
