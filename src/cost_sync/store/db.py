"""PostgreSQL connections with errors an operator can act on, and never a password in them.

:func:`database_errors` is the one place where asyncpg's and the socket layer's exceptions become
:class:`~cost_sync.errors.DatabaseError` (like httpx's ``map_httpcore_exceptions``): code that
talks to PostgreSQL wraps the talk in it instead of catching driver exceptions itself.
:func:`maps_errors` does the same for a whole coroutine function: a store maps once per method.
Cancellation is never mapped: ``asyncio.CancelledError`` always passes through.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from cost_sync.errors import DatabaseError
from cost_sync.settings import URL_ENCODING_HINT, password_in_host

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

#: A connection of its own or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: What the driver and the network raise when PostgreSQL cannot be reached or refuses a statement.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # A connection terminated mid-statement can leave asyncpg's protocol in a state it reports so.
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
#: What the driver raises once the server or the network has dropped the connection.
_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, as ``host:port/database`` (a socket directory stands for the host)."""
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = parts.hostname or (query.get("host") or ["localhost"])[0]
        port = parts.port or int((query.get("port") or ["5432"])[0])
        database = unquote(parts.path.lstrip("/")) or (parts.username or "postgres")
    except ValueError:
        # The text that failed to parse may be a piece of the password: say nothing of it.
        return "a database URL that cannot be parsed"
    return f"{host}:{port}/{database}"


def scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN's password (if any) replaced by ``***``."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def explain(exc: BaseException, dsn: str | None = None) -> str:
    """An operator-facing reason for a driver error, without a password in it."""
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, TimeoutError):
        reason = "timed out"
    elif isinstance(exc, _LOST):
        # asyncpg's own words ("released back to the pool", "another operation is in progress")
        # describe its internals, not what happened.
        reason = (
            f"the connection was lost (terminated by the server, or the network failed: {type(exc).__name__})"
        )
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    return scrub(reason, dsn) if dsn else reason


@contextlib.contextmanager
def database_errors(
    what: str, *, dsn: str | None = None, error: type[DatabaseError] = DatabaseError
) -> Iterator[None]:
    """Raise ``error("<what>: <reason>")`` for any driver or network error inside the block.

    A :class:`DatabaseError` raised inside passes unchanged, and so does cancellation.
    """
    try:
        yield
    except DatabaseError:
        raise
    except DRIVER_ERRORS as exc:
        raise error(f"{what}: {explain(exc, dsn)}") from None


def maps_errors(
    what: str, *, error: type[DatabaseError] = DatabaseError
) -> Callable[[Callable[_P, Awaitable[_T]]], Callable[_P, Coroutine[Any, Any, _T]]]:
    """Decorate a coroutine function: its driver and network errors leave as ``error("<what>: <reason>")``,
    as :func:`database_errors` maps them around its whole body."""

    def decorate(function: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        @functools.wraps(function)
        async def mapped(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            with database_errors(what, error=error):
                return await function(*args, **kwargs)

        return mapped

    return decorate


def _connect_errors(dsn: str) -> contextlib.AbstractContextManager[None]:
    where = describe_dsn(dsn)
    hint = f"; {URL_ENCODING_HINT}" if password_in_host(dsn) else ""

    @contextlib.contextmanager
    def mapped() -> Iterator[None]:
        try:
            with database_errors(f"cannot connect to PostgreSQL at {where}", dsn=dsn):
                yield
        except DatabaseError as exc:
            raise DatabaseError(f"{exc}{hint}") from None
        except ValueError:
            # asyncpg's URL parser: its message may quote a piece of the password.
            raise DatabaseError(
                f"cannot connect to PostgreSQL: the database URL cannot be parsed{hint}"
            ) from None

    return mapped()


async def connect(dsn: str, *, timeout: float = 10.0, statement_cache_size: int = 0) -> asyncpg.Connection:
    """Open one connection; raise DatabaseError naming host and port if that fails.

    ``statement_cache_size`` 0 (the default): no prepared statement outlives its transaction, so
    the connection works through a pooler in transaction mode (PgBouncer, NileDB).
    """
    with _connect_errors(dsn):
        return await asyncpg.connect(dsn, timeout=timeout, statement_cache_size=statement_cache_size)


async def _no_reset(_: asyncpg.Connection) -> None:
    """A released connection is not reset: cost-sync keeps no session state (SET LOCAL, transaction
    locks only), and through a pooler asyncpg's reset (``pg_advisory_unlock_all()``, ``RESET ALL``)
    would run on whichever server connection the pooler picks, releasing another client's locks."""


async def create_pool(
    dsn: str,
    *,
    timeout: float = 10.0,
    min_size: int = 1,
    max_size: int = 4,
    statement_cache_size: int = 0,
) -> asyncpg.Pool:
    """Open a pool; raise DatabaseError naming host and port if the first connection fails."""
    with _connect_errors(dsn):
        pool = await asyncpg.create_pool(
            dsn,
            timeout=timeout,
            min_size=min_size,
            max_size=max_size,
            statement_cache_size=statement_cache_size,
            reset=_no_reset,
        )
    assert pool is not None
    return pool
