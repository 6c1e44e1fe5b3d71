"""``python -m scoregeo`` (and ``torchrun ... -m scoregeo``): the command-line interface."""

import sys

from .cli import main

sys.exit(main())
