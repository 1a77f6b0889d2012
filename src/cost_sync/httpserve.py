"""Serve an ASGI app with uvicorn inside the running event loop, leaving signals to the caller.

``uvicorn.Server.serve()`` takes over SIGINT/SIGTERM; cost-sync installs its handlers in one place
(:func:`cost_sync.signals.stop_on_signals`) and the sandbox must not steal Ctrl-C from a test run,
so the server used here captures no signal and stops when told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

_STARTUP_TIMEOUT = 10.0


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


class AppServer:
    """One ASGI app on one socket, started and stopped by the caller."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, name: str = "http") -> None:
        self.host = host
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._name = name
        config = uvicorn.Config(
            app,
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
