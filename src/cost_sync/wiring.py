"""The entry points' resources: the Hostwinds client and the database pool, built from settings.

The command line and the daemon open them here and hand them to a run; nothing below builds a
client or a pool of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx

from cost_sync import __version__
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.settings import Settings
from cost_sync.store.db import create_pool

__all__ = ["open_hostwinds", "open_resources"]


@contextlib.asynccontextmanager
async def open_hostwinds(settings: Settings, *, purpose: str = "") -> AsyncIterator[HostwindsClient]:
    """A HostwindsClient configured from ``[hostwinds]``, on an HTTP client closed on exit.

    ``purpose`` is added to the User-Agent (``doctor``), so Hostwinds' logs can tell the callers
    apart.
    """
    settings.require("hostwinds.api_key")
    hw = settings.hostwinds
    assert hw.api_key is not None
    agent = f"cost-sync/{__version__}" + (f" ({purpose})" if purpose else "")
    # local_address 0.0.0.0: Hostwinds keys are bound to an IPv4 allow-list, so never call over IPv6.
    transport = httpx.AsyncHTTPTransport(local_address="0.0.0.0", retries=0)  # noqa: S104
    async with httpx.AsyncClient(
        transport=transport,
        timeout=hw.timeout_seconds,
        limits=httpx.Limits(max_connections=hw.max_concurrency),
        headers={"User-Agent": agent},
    ) as http:
        yield HostwindsClient(
            http,
            hw.api_key.get_secret_value(),
            url=hw.url,
            requests_per_second=hw.requests_per_second or None,
            max_concurrency=hw.max_concurrency,
            attempts=hw.attempts,
            timeout=hw.timeout_seconds,
            max_response_bytes=hw.max_response_bytes,
        )


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[tuple[HostwindsClient, asyncpg.Pool]]:
    """The Hostwinds client and the database pool a run needs; both closed on exit."""
    # Every missing setting is named at once, not one per attempt.
    settings.require("hostwinds.api_key", "database.url")
    async with open_hostwinds(settings) as client:
        pool = await create_pool(
            settings.database_dsn(),
            timeout=settings.database.connect_timeout_seconds,
            statement_cache_size=settings.database.statement_cache_size,
        )
        try:
            yield client, pool
        finally:
            await pool.close()
