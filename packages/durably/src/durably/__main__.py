"""``python -m durably`` is the ``durably`` command."""

import sys

from durably.cli import main

sys.exit(main())
