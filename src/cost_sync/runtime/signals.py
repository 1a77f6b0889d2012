"""The one place cost-sync installs signal handlers: SIGTERM and SIGINT set an event, then are restored."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from cost_sync.errors import CostSyncError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(CostSyncError):
    """Terminated by SIGTERM; the run was cancelled and recorded, nothing was written."""

    exit_code = 128 + signal.SIGTERM


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT while the block runs; the previous handlers come back after."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    try:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def sigterm_cancels_run() -> AsyncIterator[None]:
    """SIGTERM cancels this one-shot run as SIGINT does (ledger row "cancelled"), then exits 143.

    Outside the main thread (``cli.main`` run from a worker thread) no handler can be installed,
    and none is.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = asyncio.Event()

    def terminate() -> None:
        terminated.set()
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (ValueError, RuntimeError):
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        if terminated.is_set():
            raise Terminated() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
