"""``python -m workshop_lib ...``: see cli.py."""

import sys

from .cli import UsageError, main
from .errors import WorkshopError

if __name__ == "__main__":
    try:
        main()
    except UsageError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
    except WorkshopError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
