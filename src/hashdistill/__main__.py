"""``python -m hashdistill``."""

from .cli import main

main()
