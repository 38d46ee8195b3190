"""``python -m critpath_widgets`` (and ``torchrun -m critpath_widgets``): the critpath CLI."""

import sys

from .cli import main

sys.exit(main())
