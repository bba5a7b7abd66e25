"""Progress bars for long work, on a terminal only: piped or captured output never holds a bar, and an
error line never shares a line with one (``close_progress_bars``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kw: Any) -> tqdm:
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal; it clears itself when done."""
    return tqdm(iterable, disable=not (enabled and sys.stderr.isatty()), leave=False, **kw)


def close_progress_bars() -> None:
    """Close (and so clear) every live bar, e.g. before an error line is printed."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
