"""Progress for long work. On a terminal: tqdm bars on stderr that clear themselves, and an error line never
shares a line with one (``close_progress_bars``). Off a terminal (output to a file, a pipe, a job log): plain
lines instead of bars for a long stage (one that runs, or after its first step is projected to run, 10 s or
more): one when it starts (what, how many), one at most every 30 s while it runs, and one when it ends (how
many, seconds). A short stage (one query's encoding) prints nothing. ``docs/input.md`` describes both."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

EVERY_S = 30.0  # the most one progress line a stage prints per this many seconds, off a terminal
LONG_S = 10.0  # a stage that runs (or is projected to run) this long is announced, off a terminal


class LineProgress:
    """tqdm's small interface (iterate, ``update``, ``set_postfix``, ``close``) as lines on a stream.
    A stage is announced once it has run ``long_s`` seconds or its steps so far project that it will (elapsed
    / done × total): the start line is printed then, after its first step at the earliest, so a stage that
    fails on its first step (an unreadable image) prints only the error. ``announce=False`` skips the start
    and end lines (a stage whose caller prints its own summary, e.g. an epoch) and keeps the periodic ones.
    The end line is written, for an announced stage, when the iterable is exhausted or ``close()`` is
    called; a stage that fails never claims to be done."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "working",
        unit: str = "it",
        announce: bool = True,
        every: float = EVERY_S,
        long_s: float = LONG_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.announce, self.every, self.long_s, self.clock = announce, every, long_s, clock
        self.stream = stream if stream is not None else sys.stderr
        self.n, self.postfix, self.closed, self.long = 0, "", False, False
        self.start = self.last = clock()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if not self.long:
            spent = now - self.start
            projected = spent / self.n * self.total if self.total and self.n > 0 else spent
            self.long = max(spent, projected) >= self.long_s
            if self.long and self.announce:
                started = f" {spent:.0f} s ago" if spent >= 1 else ""
                self._print(f"{self.desc}: started{started}" + (f", {self.total:,} {self.unit}" if self.total else ""))
        if self.long and now - self.last >= self.every:
            self.last = now
            of = f"/{self.total:,}" if self.total is not None else ""
            self._print(f"{self.desc}: {self.n:,}{of} {self.unit}, {now - self.start:.0f} s{self.postfix}")

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in kw.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.announce and self.long:
            self._print(f"{self.desc}: done, {self.n:,} {self.unit} in {self.clock() - self.start:.1f} s")


def progress_bar(
    iterable: Iterable | None = None, *, enabled: bool = True, announce: bool = True, **kw: Any
) -> tqdm | LineProgress:
    """A tqdm bar on stderr when it is a terminal, lines (``LineProgress``) when it is not; nothing at all
    when not ``enabled``. ``announce``: whether the lines include the stage's start and end."""
    if enabled and not sys.stderr.isatty():
        picked = {k: kw[k] for k in ("total", "desc", "unit") if k in kw}
        return LineProgress(iterable, announce=announce, every=EVERY_S, long_s=LONG_S, **picked)
    from tqdm import tqdm  # (imported here: a command that shows no bar does not pay for it)

    return tqdm(iterable, disable=not enabled, leave=False, **kw)


def close_progress_bars() -> None:
    """Close (and so clear) every live bar, e.g. before an error line is printed."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()
