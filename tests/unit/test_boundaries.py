"""The edges: driver errors mapped once, signals handled in one place, cancellation never swallowed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import asyncpg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cost_sync.errors import CostSyncError, DatabaseError, LockTimeout, MigrationError
from cost_sync.hostwinds.sandbox import FleetFileError
from cost_sync.runtime.httpserve import AppServer, form_fields
from cost_sync.runtime.signals import stop_on_signals
from cost_sync.store.db import connect, database_errors, maps_errors
from cost_sync.store.sqlfiles import queries, sql_dir


@pytest.mark.parametrize(
    "raised",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.PostgresError("relation does not exist"),
    ],
)
def test_driver_errors_become_database_errors(raised: BaseException) -> None:
    """Any driver or network error inside the boundary is a DatabaseError saying what was being done."""
    with pytest.raises(DatabaseError, match=r"^reading rows: "), database_errors("reading rows"):
        raise raised


def test_boundary_keeps_the_error_class_asked_for_and_passes_its_own() -> None:
    """``error=`` picks the class; a DatabaseError raised inside (a LockTimeout) passes unchanged."""
    with pytest.raises(MigrationError), database_errors("migrating", error=MigrationError):
        raise OSError(5, "I/O error")
    with pytest.raises(LockTimeout, match="held"), database_errors("migrating", error=MigrationError):
        raise LockTimeout("held")


def test_boundary_scrubs_the_password() -> None:
    """A driver message quoting the DSN's password is scrubbed before it reaches the operator."""
    dsn = "postgresql://app:hunter2-pw@db:5432/x"
    with pytest.raises(DatabaseError) as caught, database_errors("connecting", dsn=dsn):
        raise asyncpg.PostgresError("password authentication failed: hunter2-pw")
    assert "hunter2-pw" not in str(caught.value)


async def test_boundary_never_maps_cancellation() -> None:
    """CancelledError passes through the boundary untouched."""
    with pytest.raises(asyncio.CancelledError), database_errors("anything"):
        raise asyncio.CancelledError


async def test_a_mapped_method_maps_its_whole_body_once() -> None:
    """``maps_errors`` maps a driver error anywhere in the coroutine, lets its own DatabaseError and
    cancellation through unchanged, and keeps the function's name and result."""
    mapped = maps_errors("the run failed in PostgreSQL")

    async def raises(raised: BaseException) -> int:
        await asyncio.sleep(0)
        raise raised

    fails = mapped(raises)

    @mapped
    async def answers(value: int) -> int:
        return value

    with pytest.raises(DatabaseError, match=r"^the run failed in PostgreSQL: timed out$"):
        await fails(TimeoutError())
    with pytest.raises(LockTimeout, match=r"^held$"):
        await fails(LockTimeout("held"))
    with pytest.raises(asyncio.CancelledError):
        await fails(asyncio.CancelledError())
    with pytest.raises(MigrationError, match=r"^migrating: "):
        await maps_errors("migrating", error=MigrationError)(raises)(OSError(5, "I/O error"))
    assert await answers(3) == 3
    assert answers.__name__ == "answers"


@pytest.mark.parametrize("group", sorted(p.stem for p in (sql_dir() / "queries").glob("*.sql")))
def test_every_named_query_has_one_name_and_a_statement(group: str) -> None:
    """In each ``sql/queries`` file a name starts one query only (a second would replace the first)."""
    text = (sql_dir() / "queries" / f"{group}.sql").read_text(encoding="utf-8")
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("-- name:")]
    assert len(names) == len(set(names)), names
    loaded = queries(group)
    assert list(loaded) == names
    for name, body in loaded.items():
        statement = [
            line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("--")
        ]
        assert statement, name


async def test_unparsable_url_at_connect_is_a_database_error_without_the_password() -> None:
    """A URL asyncpg cannot parse is a DatabaseError with the hint, never a traceback or the secret."""
    with pytest.raises(DatabaseError) as caught:
        await connect("postgresql://app:Qx/zz@127.0.0.1:5432/db", timeout=2)
    assert "percent-encode" in str(caught.value)
    assert "Qx" not in str(caught.value)


def test_fleet_file_error_is_a_configuration_error() -> None:
    """FleetFileError belongs to the CostSyncError tree with exit code 2 (and is still a ValueError)."""
    error = FleetFileError("fleet.toml: line 3: bad")
    assert isinstance(error, CostSyncError)
    assert isinstance(error, ValueError)
    assert error.exit_code == 2


async def test_signals_set_the_stop_event_and_are_restored() -> None:
    """SIGTERM inside the block sets the event; after the block the loop has no handler left."""
    loop = asyncio.get_running_loop()
    async with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=5)
    assert stop.is_set()
    assert loop.remove_signal_handler(signal.SIGTERM) is False
    assert loop.remove_signal_handler(signal.SIGINT) is False


async def test_stop_does_not_swallow_the_callers_cancellation() -> None:
    """A caller cancelled while stop() waits for an open request gets CancelledError; the port is freed."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(_: Request) -> Response:
        entered.set()
        await release.wait()
        return Response("late")

    server = AppServer(Starlette(routes=[Route("/", slow)]), port=0)
    await server.start()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(entered.wait(), timeout=5)

    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.1)  # stop() is now waiting for the open request
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert stopping.cancelled()
    release.set()
    writer.close()
    await asyncio.sleep(0.5)  # the server task winds down after its cancellation
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))  # the port was released


async def test_stop_absorbs_only_its_own_cancellation_of_a_server_that_never_started() -> None:
    """stop() on a started-then-stopped server returns normally, twice."""
    server = AppServer(Starlette(), port=0)
    await server.start()
    await server.stop()
    await server.stop()


def test_the_servers_read_a_form_as_hostwinds_does() -> None:
    """The sandbox and the replay server share one form reader: the first value of a repeated name,
    blank values kept, percent-escapes and ``+`` decoded, bytes that are not UTF-8 replaced."""
    body = b"action=get_instances&API=k%2By+z&action=upgrade_instance&serviceid=&note=caf\xe9"
    assert form_fields(body) == {
        "action": "get_instances",
        "API": "k+y z",
        "serviceid": "",
        "note": "caf\ufffd",
    }
    assert form_fields(b"") == {}
