"""Serve an ASGI app with uvicorn inside the running event loop, leaving signals to the caller.

``uvicorn.Server.serve()`` takes over SIGINT/SIGTERM; cost-sync installs its handlers in one place
(:func:`cost_sync.runtime.signals.stop_on_signals`) and the sandbox must not steal Ctrl-C from a test run,
so the server used here captures no signal and stops when told to.

A server may bound its connections (``max_connections``) and the time a request may take to
arrive (``request_timeout``): a connection that has not sent a whole request within it is closed,
idle or slow alike, and over the bound a new connection displaces the oldest one still waiting for
its request (or is closed itself when every one is busy), so idle sockets can never use up the
process's descriptors. Repeated error lines from the event loop and uvicorn (an ``accept()`` out
of descriptors, junk requests) are logged at a bounded rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

_STARTUP_TIMEOUT = 10.0
#: The least time between two log lines that say the same thing (first line of the message).
LOG_REPEAT_SECONDS = 10.0


class RepeatFilter(logging.Filter):
    """Lets a message through at most once per ``interval`` s; the next one says how many were dropped.

    Messages are told apart by logger and first line: the event loop's "socket.accept() out of
    system resource" names a different socket on each line after the first.
    """

    def __init__(self, interval: float = LOG_REPEAT_SECONDS, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        #: (logger, first line) -> (when last let through, how many dropped since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            first = record.getMessage().split("\n", 1)[0][:200]
        except Exception:  # a record that cannot be formatted is not ours to judge
            return True
        key = (record.name, first)
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()  # bounded: forgetting only lets one more line through
        self._seen[key] = (now, 0)
        if last is not None and last[1] and isinstance(record.msg, str):
            head, newline, rest = record.msg.partition("\n")
            note = f" [{last[1]} more like this dropped in the last {now - last[0]:.0f} s]"
            record.msg = head + note + newline + rest
        return True


#: One filter for the process: the loggers are process-wide too.
REPEATS = RepeatFilter()
_FILTERED_LOGGERS = ("asyncio", "uvicorn.error")


def _install_repeat_filter() -> None:
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if REPEATS not in logger.filters:
            logger.addFilter(REPEATS)


class _BoundedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a request deadline and a bound on open connections."""

    max_connections: int | None = None
    request_timeout: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()
        limit = self.max_connections
        if limit is not None and len(self.connections) > limit:
            waiting = [
                c
                for c in self.connections
                if c is not self and isinstance(c, _BoundedH11) and c._waiting() and not c._closing()
            ]
            if waiting:
                # The oldest connection still waiting for its request makes room: a flood of idle
                # sockets cannot keep a probe out.
                victim = min(waiting, key=lambda c: c._since)
                victim.transport.abort()
            else:
                transport.abort()

    def _closing(self) -> bool:
        return self.transport.is_closing()

    def _waiting(self) -> bool:
        """No request is being handled: before the first, or between two on a kept-alive connection."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._since = self.loop.time()
        if self.request_timeout is not None:
            self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        # Headers or body not complete in time (idle or trickling): close. A request that arrived
        # whole and is being answered is left to finish.
        if self.cycle is None or self.cycle.response_complete or self.cycle.more_body:
            self.transport.abort()

    def on_response_complete(self) -> None:
        self._disarm()
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


#: Descriptors kept for the rest of the process (database pool, Hostwinds client, files).
DESCRIPTOR_RESERVE = 64


def connections_within_descriptors(wanted: int) -> int:
    """``wanted``, lowered so that the connections leave DESCRIPTOR_RESERVE descriptors free.

    A bound above what the descriptor limit allows would let accept() fail first: the queue of
    idle sockets then drains only as they time out, and a probe waits behind all of them.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    allowed = max(1, soft - DESCRIPTOR_RESERVE)
    if wanted > allowed:
        logging.getLogger(__name__).warning(
            "max_connections %d lowered to %d: the descriptor limit is %d", wanted, allowed, soft
        )
    return min(wanted, allowed)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one); OSError says what to free."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r} to listen on: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is already in use; stop what holds it or choose another port"
        else:
            message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise OSError(exc.errno, message) from None
    return sock


def form_fields(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as one value per name (the first), as the
    Hostwinds API reads it: the sandbox and the replay server both answer such forms."""
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


class AppServer:
    """One ASGI app on one socket, started and stopped by the caller."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "http",
        max_connections: int | None = None,
        request_timeout: float | None = None,
    ) -> None:
        self.host = host
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._name = name
        if max_connections is not None:
            max_connections = connections_within_descriptors(max_connections)
        #: The bound in force (None: unbounded).
        self.max_connections = max_connections
        protocol = type(
            "BoundedH11",
            (_BoundedH11,),
            {"max_connections": max_connections, "request_timeout": request_timeout},
        )
        config = uvicorn.Config(
            app,
            http=protocol,
            log_config=None,  # cost-sync's logging configuration stays in charge
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Serve from now on; return once connections are accepted."""
        _install_repeat_filter()
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name=self._name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTUP_TIMEOUT
        while not self._server.started:
            if self._task.done() or loop.time() > deadline:
                await self.stop()
                raise RuntimeError(f"{self._name}: the server on {self.host}:{self.port} did not start")
            await asyncio.sleep(0.002)

    async def wait(self) -> None:
        """Wait until the server stops (from stop() elsewhere, or a crash, which is raised)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop accepting, finish open requests (2 s at most), release the port.

        The caller's own cancellation is never swallowed: only the server task's cancellation (when
        it had not started yet) is absorbed here; a cancelled caller still gets CancelledError.
        """
        self._server.should_exit = True
        task, self._task = self._task, None
        try:
            if task is not None:
                if not self._server.started:
                    task.cancel()
                # wait(), not await task: the task's own CancelledError is not raised into the caller,
                # while the caller's cancellation is.
                await asyncio.wait({task})
                if not task.cancelled():
                    task.result()
        finally:
            if task is not None and not task.done():
                task.cancel()
            self._sock.close()
