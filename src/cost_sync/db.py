"""PostgreSQL connections with errors an operator can act on, and never a password in them."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from cost_sync.errors import DatabaseError


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, as ``host:port/database`` (a socket directory stands for the host)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["localhost"])[0]
    port = parts.port or int((query.get("port") or ["5432"])[0])
    database = unquote(parts.path.lstrip("/")) or (parts.username or "postgres")
    return f"{host}:{port}/{database}"


def scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN's password (if any) replaced by ``***``."""
    password = urlsplit(dsn).password
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def _cannot_connect(dsn: str, exc: BaseException) -> DatabaseError:
    reason = str(exc) or type(exc).__name__
    return DatabaseError(f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {scrub(reason, dsn)}")


async def connect(dsn: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """Open one connection; raise DatabaseError naming host and port if that fails."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _cannot_connect(dsn, exc) from None


async def create_pool(
    dsn: str, *, timeout: float = 10.0, min_size: int = 1, max_size: int = 4
) -> asyncpg.Pool:
    """Open a pool; raise DatabaseError naming host and port if the first connection fails."""
    try:
        pool = await asyncpg.create_pool(dsn, timeout=timeout, min_size=min_size, max_size=max_size)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _cannot_connect(dsn, exc) from None
    assert pool is not None
    return pool
