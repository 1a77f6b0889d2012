"""The one place cost-sync installs signal handlers: SIGTERM and SIGINT set an event, then are restored."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
