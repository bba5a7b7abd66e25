"""``python -m hashdistill``."""

import sys

from .cli import main

sys.exit(main())
