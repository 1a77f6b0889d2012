"""The client against a small purpose-built HTTP server: endless, trickling, huge and deep bodies, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import respx

from cost_sync.domain.models import Cycle, Unpriced, VpsRow
from cost_sync.domain.pricing import price_row
from cost_sync.domain.redact import redact
from cost_sync.errors import HostwindsResponseError, HostwindsTransientError
from cost_sync.hostwinds.client import HostwindsClient
from tests.fakes import instance as raw_instance

API_KEY = "hw-limits-key-0a1b2c3d4e5f"
CL = b"content-length"
Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class BadServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers every request with ``respond``; counts bytes sent."""

    respond: Writer
    requests: int = 0
    bytes_sent: int = 0
    url: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests += 1
            await self.respond(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def bad_server(
    respond: Callable[[BadServer, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[BadServer]:
    box: BadServer = BadServer(respond=lambda w: respond(box, w))
    server = await asyncio.start_server(box.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    box.url = f"http://127.0.0.1:{port}/cloud/api.php"
    try:
        yield box
    finally:
        server.close()
        for task in box.tasks:
            task.cancel()
        await asyncio.gather(*box.tasks, return_exceptions=True)


async def send(box: BadServer, writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    box.bytes_sent += len(data)


async def no_sleep(_: float) -> None:
    return None


def client_for(http: httpx.AsyncClient, url: str, **options: float) -> HostwindsClient:
    return HostwindsClient(
        http,
        API_KEY,
        url=url,
        requests_per_second=None,
        sleep=no_sleep,
        **options,  # type: ignore[arg-type]
    )


async def test_endless_body_fails_the_attempt_at_the_size_cap() -> None:
    """A body that never ends is read up to max_response_bytes, then fails without retry or growth."""

    async def endless(box: BadServer, writer: asyncio.StreamWriter) -> None:
        await send(box, writer, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[")
        chunk = b'{"serviceid": 1},' * 4096
        while True:
            await send(box, writer, chunk)

    async with bad_server(endless) as box, httpx.AsyncClient() as http:
        client = client_for(http, box.url, max_response_bytes=1024 * 1024, timeout=30)
        with pytest.raises(HostwindsResponseError, match="larger than max_response_bytes 1048576"):
            await asyncio.wait_for(client.get_instances(), timeout=30)
    assert box.requests == 1  # not retried: the next attempt would only read as much again
    assert client.requests["get_instances", "error"] == 1


async def test_declared_oversized_body_is_refused_before_reading() -> None:
    """A Content-Length over the cap fails the attempt before the body is read."""

    async def huge(box: BadServer, writer: asyncio.StreamWriter) -> None:
        await send(box, writer, b"HTTP/1.1 200 OK\r\nContent-Length: 209715200\r\n\r\n")
        await asyncio.sleep(30)

    async with bad_server(huge) as box, httpx.AsyncClient() as http:
        client = client_for(http, box.url, max_response_bytes=1024 * 1024, timeout=30)
        with pytest.raises(HostwindsResponseError, match="Content-Length 209715200"):
            await asyncio.wait_for(client.get_instances(), timeout=30)


async def test_trickling_body_is_cut_by_the_whole_request_deadline() -> None:
    """A body trickling in forever fails each attempt at timeout_seconds, retried, then a transient error."""

    async def trickle(box: BadServer, writer: asyncio.StreamWriter) -> None:
        await send(box, writer, b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n[")
        while True:
            await send(box, writer, b" " * 100)
            await asyncio.sleep(0.02)

    async with bad_server(trickle) as box, httpx.AsyncClient(timeout=5) as http:
        client = client_for(http, box.url, timeout=0.5, attempts=2)
        with pytest.raises(
            HostwindsTransientError, match=r"after 2 attempts \(last: no complete answer within 0.5 s\)"
        ):
            await asyncio.wait_for(client.get_instances(), timeout=30)
    assert box.requests == 2
    # Each attempt ended long before the server would have finished sending.
    assert box.bytes_sent < 1_000_000


async def test_deeply_nested_json_is_an_unreadable_body_not_a_crash() -> None:
    """JSON nested 100,000 deep is a HostwindsResponseError, not an uncaught RecursionError."""
    body = b"[" * 100_000 + b"]" * 100_000

    async def deep(box: BadServer, writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        await send(box, writer, head.encode() + body)

    async with bad_server(deep) as box, httpx.AsyncClient() as http:
        client = client_for(http, box.url)
        with pytest.raises(HostwindsResponseError, match="nested too deeply"):
            await client.get_instances()
        with pytest.raises(HostwindsResponseError, match="nested too deeply"):
            await client.get_billingcycle_prices(1)
    assert box.requests == 2


@respx.mock
async def test_error_envelope_secrets_are_redacted_and_bounded() -> None:
    """An error message carrying the key and "rootpass=..." reaches the exception redacted and short."""
    message = f"failed for {API_KEY}: rootpass=hunter2-root configkey: 'cfg-9' password=\"p w\" " + "y" * 900
    respx.post("https://hw.test/api").mock(
        return_value=httpx.Response(200, text=json.dumps([{"result": "error", "message": message}]))
    )
    async with httpx.AsyncClient() as http:
        client = client_for(http, "https://hw.test/api")
        with pytest.raises(HostwindsResponseError) as caught:
            await client.call("get_instances")
    text = str(caught.value)
    for secret in (API_KEY, "hunter2", "cfg-9", "p w"):
        assert secret not in text
    assert "rootpass=[redacted]" in text
    assert len(text) < 300


def test_malformed_price_cell_detail_is_redacted() -> None:
    """A cycle-price cell {"rootpass": ...} shows in the unpriced detail without its value."""
    import uuid

    from cost_sync.domain.models import parse_instance
    from cost_sync.hostwinds.answers import price_cell_text

    cell = price_cell_text({"rootpass": "hunter2-root", "note": "x"})
    row = VpsRow(id=uuid.uuid4(), hostwinds_instance_id="7", status="active", approximate_cost=None)
    inst = parse_instance({k: v for k, v in raw_instance(7).items() if k not in {"password", "configkey"}})
    result = price_row(row, inst, override=None, cycle_prices={Cycle.MONTHLY: cell}, plan=None)
    assert isinstance(result, Unpriced)
    assert "hunter2" not in result.detail
    assert "rootpass" in result.detail


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ('{"password": "abc def", "ok": 1}', "abc def"),
        ("root_password=s3cr3t&x=1", "s3cr3t"),
        ("API_KEY: k-123", "k-123"),
        ("token='t 1'", "t 1"),
        ("\x00pass=\u2028zz", "zz"),
    ],
)
def test_redact_hides_secret_shaped_fields(text: str, hidden: str) -> None:
    """Every secret-shaped field's value is replaced, and the result is one printable line."""
    out = redact(text)
    assert hidden not in out
    assert out.isprintable()


def test_redact_bounds_length_and_names_secrets() -> None:
    """A long value is cut to the limit; a named secret anywhere in it is replaced."""
    out = redact("a" * 50 + "SECRET-1" + "b" * 10_000, limit=80, secrets=("SECRET-1",))
    assert len(out) == 80
    assert "SECRET-1" not in out


def answer(status: str, body: bytes, *headers: str) -> Callable[[BadServer, asyncio.StreamWriter], Any]:
    """A responder sending one fixed HTTP/1.1 answer."""

    async def respond(box: BadServer, writer: asyncio.StreamWriter) -> None:
        head = "".join(f"{h}\r\n" for h in (f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers))
        await send(box, writer, head.encode() + b"\r\n" + body)

    return respond


@pytest.mark.parametrize(
    ("responder", "error", "message", "requests"),
    [
        (
            answer("200 OK", b'{"success": [{"serviceid": 1}, {"servi'),
            HostwindsTransientError,
            r"after 2 attempts \(last: a body that is not JSON \(HTTP 200\)\)",
            2,
        ),
        (
            answer("307 Temporary Redirect", b"", "Location: http://127.0.0.1:1/elsewhere"),
            HostwindsResponseError,
            "Hostwinds answered HTTP 307",
            1,
        ),
        (
            answer("503 Service Unavailable", b"<html>down</html>"),
            HostwindsTransientError,
            r"after 2 attempts \(last: HTTP 503\)",
            2,
        ),
    ],
    ids=["truncated_json", "redirect_not_followed", "persistent_503"],
)
async def test_held_faults_fail_the_call_with_their_cause(
    responder: Callable[[BadServer, asyncio.StreamWriter], Any],
    error: type[Exception],
    message: str,
    requests: int,
) -> None:
    """Truncated JSON and persistent 503 are retried then transient; a redirect is not followed."""
    async with bad_server(responder) as box, httpx.AsyncClient() as http:
        client = client_for(http, box.url, attempts=2)
        with pytest.raises(error, match=message):
            await client.get_instances()
    assert box.requests == requests


async def test_connection_refused_is_retried_then_transient() -> None:
    """Nothing listening on the port: every attempt fails to connect, then a transient error naming it."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with httpx.AsyncClient() as http:
        client = client_for(http, f"http://127.0.0.1:{port}/cloud/api.php", attempts=3)
        with pytest.raises(HostwindsTransientError, match=r"after 3 attempts \(last: ConnectError\)"):
            await client.get_instances()
    assert client.requests["get_instances", "transient"] == 3
