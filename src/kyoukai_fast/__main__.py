"""``python -m kyoukai_fast run MODULE:APP``: the same as the ``kyoukai-fast`` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
