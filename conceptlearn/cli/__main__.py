"""``python -m conceptlearn.cli ...``: the same as the ``conceptlearn`` command."""

import sys

from conceptlearn.cli import main

sys.exit(main())
