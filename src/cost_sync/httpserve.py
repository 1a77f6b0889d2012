"""Serve an ASGI app with uvicorn inside the running event loop, leaving signals to the caller.

``uvicorn.Server.serve()`` installs its own SIGINT/SIGTERM handlers; cost-sync's daemon and demo
own shutdown themselves, so this drives uvicorn's startup, main loop and shutdown directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from starlette.types import ASGIApp


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; OSError names the address when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class AppServer:
    """One ASGI app on one socket, started and stopped by the caller."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, log_level="warning")
        config.load()
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Accept connections from now on."""
        self._server.lifespan = self._server.config.lifespan_class(self._server.config)
        await self._server.startup(sockets=[self._sock])
        self._task = asyncio.create_task(self._server.main_loop(), name=f"http-{self.port}")

    async def stop(self) -> None:
        """Stop accepting, finish open requests, close the socket."""
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            await self._server.shutdown(sockets=[self._sock])
        self._sock.close()
