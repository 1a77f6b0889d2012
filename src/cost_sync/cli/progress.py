"""The live progress line of a run on a terminal: asked / to ask, rate, elapsed time and ETA.

Redrawn in place on stderr at most every REDRAW_SECONDS (and on the last answer), cut to the
terminal's width, and erased when the run ends, so the summary that follows stands alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TextIO

from cost_sync.run.sync import Progress
from cost_sync.runtime import logs

__all__ = ["bar_line", "terminal_bar"]

#: The shortest time between two redraws, in seconds.
REDRAW_SECONDS = 0.1
#: The bar's width in characters, between its brackets.
BAR_WIDTH = 20
#: Moves to the start of the line and erases it.
_ERASE = "\r\x1b[2K"


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def bar_line(progress: Progress, now: float) -> str:
    """``cycle prices [######------] 120/1000 12.3/s 0:00:10 ETA 0:01:12``.

    Before the first answer the rate is left out and the ETA is ``-:--:--``; while the number to
    ask is not known yet the bar is empty and the count has no total.
    """
    total = progress.to_ask
    filled = min(BAR_WIDTH, BAR_WIDTH * progress.asked // total) if total else 0
    parts = [
        "cycle prices",
        "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]",
        f"{progress.asked}/{total}" if total else str(progress.asked),
    ]
    rate = progress.rate(now)
    if rate is not None:
        parts.append(f"{rate:.1f}/s")
    parts.append(_clock(0 if progress.started is None else now - progress.started))
    eta = progress.eta_seconds(now)
    parts.append("ETA " + ("-:--:--" if eta is None else _clock(eta)))
    return " ".join(parts)


@contextlib.asynccontextmanager
async def terminal_bar(
    stream: TextIO | None = None, *, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[Progress | None]:
    """A Progress that draws its line on ``stream`` (stderr) while the block runs; None when the
    stream is no terminal: off a terminal the run logs ``sync.progress`` lines instead."""
    out = sys.stderr if stream is None else stream
    if not out.isatty():
        yield None
        return
    width = _columns(out)
    drawn: float | None = None  # float-ok: seconds
    shown = False

    def update(progress: Progress) -> None:
        nonlocal drawn, shown
        now = clock()
        last = progress.asked >= progress.to_ask
        if drawn is not None and now - drawn < REDRAW_SECONDS and not last:
            return
        drawn = now
        # One column short of the width: a line that fills it wraps on some terminals.
        out.write(_ERASE + bar_line(progress, now)[: max(0, width - 1)])
        out.flush()
        shown = True

    def erase() -> None:
        # A log line is about to be written: it starts on the bar's line, which the next answer
        # draws again below it.
        nonlocal drawn, shown
        if shown:
            out.write(_ERASE)
            out.flush()
            shown = False
            drawn = None

    try:
        with logs.before_each_record(erase):
            yield Progress(listener=update)
    finally:
        erase()


def _columns(out: TextIO) -> int:
    """The width of the terminal ``out`` writes to (not stdout's, which may be redirected)."""
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return shutil.get_terminal_size().columns
