"""Progress on a terminal: a stage name and a bar on stderr (tqdm), nothing when stderr is not a terminal or quiet.

`enabled(progress)` decides once per command: True shows bars, False hides them, None (the default of the CLI)
shows them only when stderr is a terminal, so that pipes and log files stay clean.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def enabled(progress: bool | None = None, stream: Any = None) -> bool:
    """Whether to show progress: `progress` when given, else whether `stream` (stderr) is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


class _Silent:
    """The interface of a tqdm bar that does nothing."""

    def update(self, n: float = 1) -> None:
        """Ignore progress."""

    def set_postfix_str(self, text: str) -> None:
        """Ignore a status text."""

    def close(self) -> None:
        """Nothing to close."""


@contextlib.contextmanager
def stage(name: str, total: float | None = None, unit: str = "it", show: bool = True) -> Iterator[Any]:
    """A bar for one stage of a command (total None: a counter with the elapsed time); a silent bar if not `show`."""
    if not show:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    started = time.perf_counter()
    bar = tqdm(total=total, desc=name, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
        sys.stderr.write(f"{name}: done in {time.perf_counter() - started:.1f} s\n")
        sys.stderr.flush()


def track(items: Iterable[T], name: str, total: int | None = None, unit: str = "it", show: bool = True) -> Iterator[T]:
    """Iterate over `items` with a bar named `name` (silently if not `show`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with stage(name, total, unit, show) as bar:
        for item in items:
            yield item
            bar.update(1)
