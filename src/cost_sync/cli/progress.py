"""The live progress bar of a run on a terminal (asked / to ask, rate, ETA), drawn by rich."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator

from cost_sync.run.sync import Progress

__all__ = ["terminal_bar"]


@contextlib.asynccontextmanager
async def terminal_bar() -> AsyncIterator[Progress | None]:
    """A Progress that draws a bar on stderr while the block runs; None when stderr is no terminal.

    Off a terminal the run logs ``sync.progress`` lines instead.
    """
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("asking Hostwinds for cycle prices"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=True,
        redirect_stderr=False,
        redirect_stdout=False,
    ) as bar:
        task = bar.add_task("ask", total=None, rate="")

        def update(progress: Progress) -> None:
            speed = progress.rate(time.monotonic())
            bar.update(
                task,
                total=progress.to_ask or None,
                completed=progress.asked,
                rate="" if speed is None else f"{speed:.1f}/s",
            )

        yield Progress(listener=update)
