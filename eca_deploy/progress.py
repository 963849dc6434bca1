"""Progress for long loops: a tqdm bar on a terminal, a few plain lines anywhere else.

tqdm redraws with carriage returns, which fill logs and CI output with one line per redraw; when
stderr is not a terminal we print the start and each quarter instead.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TextIO

QUARTERS = 4


class PlainProgress:
    """tqdm's small API (iterate, update, close) printing at most QUARTERS + 1 lines; silent without a ``desc``."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str | None, unit: str, stream: TextIO):
        self.iterable, self.desc, self.unit, self.stream = iterable, desc, unit, stream
        self.total = total if total is not None else _length(iterable)
        self.done = 0
        self.shown = -1  # the last quarter printed
        self._show()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        self._show()

    def close(self) -> None:
        if self.total is None and self.desc and self.done:
            print(f"{self.desc}: {self.done} {self.unit}", file=self.stream, flush=True)
            self.desc = None  # once

    def _show(self) -> None:
        if not self.desc or not self.total:
            return
        quarter = min(self.done, self.total) * QUARTERS // self.total
        if quarter > self.shown:
            self.shown = quarter
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}", file=self.stream, flush=True)


def _length(iterable: Iterable | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
             unit: str = "it", stream: TextIO | None = None):
    """Wrap ``iterable`` (or count ``update`` calls up to ``total``); no ``desc`` means no output at all."""
    stream = stream or sys.stderr
    if desc is not None and stream.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=stream)
    return PlainProgress(iterable, total, desc, unit, stream)
