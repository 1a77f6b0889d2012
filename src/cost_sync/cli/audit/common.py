"""What the audit verbs share: the database they read, one row named by an id."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from cost_sync.domain.matching import RowIndex
from cost_sync.errors import ConfigError
from cost_sync.settings import Settings
from cost_sync.store.db import create_pool
from cost_sync.store.migrate import require_schema


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on ``[database]``, its schema checked (as ``migrate --check``); closed on exit."""
    pool = await create_pool(
        settings.database_dsn(),
        timeout=settings.database.connect_timeout_seconds,
        statement_cache_size=settings.database.statement_cache_size,
    )
    try:
        await require_schema(pool)
        yield pool
    finally:
        await pool.close()


def one_row(index: RowIndex, key: str) -> uuid.UUID:
    """The id of the one row ``key`` names (a ConfigError when it names none or several)."""
    found = [row.id for row in index.named(key)]
    if not found:
        raise ConfigError(f"{key}: matches no vps_instances row")
    if len(found) > 1:
        raise ConfigError(f"{key}: matches {len(found)} rows; name one by its row id")
    return found[0]
