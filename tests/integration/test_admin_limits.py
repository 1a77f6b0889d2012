"""The admin endpoint under connection floods: a real daemon process under a lowered descriptor limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from cost_sync.hostwinds.sandbox import SandboxServer, load_demo_fleet
from cost_sync.runtime.httpserve import RepeatFilter
from tests.integration.conftest import seed
from tests.integration.test_container_entry import free_port, log_lines
from tests.integration.test_reliability import DEMO_ROWS

pytestmark = pytest.mark.db

IDLE_SOCKETS = 600


@pytest.mark.parametrize(
    ("nofile", "max_connections"),
    [(128, 32), (100, 1000)],
    ids=["bound_below_the_limit", "limit_below_the_bound"],
)
async def test_idle_and_slow_connections_cannot_starve_the_admin_endpoint(
    db_url: str, nofile: int, max_connections: int
) -> None:
    """600 idle sockets and a trickling request against a daemon limited to 128 (or 100) descriptors.

    Before: the sockets used up the descriptors, /healthz timed out and accept() errors were
    logged without bound. Now /healthz answers throughout, the idle and trickling sockets are
    closed by the daemon, and the log stays short. With the descriptor limit below the
    connection bound (the daemon needs about 40 for itself), accept() does fail for lack of
    descriptors: that is logged at a bounded rate and the endpoint is back once the idle sockets
    time out.
    """

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    conn = await asyncpg.connect(db_url)
    await seed(conn, DEMO_ROWS)
    fleet = load_demo_fleet()
    port = free_port()
    env = {
        **os.environ,
        "COST_SYNC_DATABASE_URL": db_url,
        "COST_SYNC_HOSTWINDS_API_KEY": fleet.api_key,
        "COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "0",
        "COST_SYNC_ADMIN_LISTEN": f"127.0.0.1:{port}",
        "COST_SYNC_ADMIN_MAX_CONNECTIONS": str(max_connections),
        "COST_SYNC_ADMIN_REQUEST_TIMEOUT_SECONDS": "2",
        "COST_SYNC_LOG_FORMAT": "json",
    }
    sockets: list[socket.socket] = []
    async with SandboxServer(fleet) as sandbox:
        env["COST_SYNC_HOSTWINDS_URL"] = sandbox.url
        daemon = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("cost-sync")),
            "run",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=limit_descriptors,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=3) as admin:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        if (await admin.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "the daemon did not come up"
                    await asyncio.sleep(0.1)

                for _ in range(IDLE_SOCKETS):
                    sock = socket.create_connection(("127.0.0.1", port))
                    sockets.append(sock)
                slow = socket.create_connection(("127.0.0.1", port))
                sockets.append(slow)
                slow.sendall(b"GET /healthz HTTP/1.1\r\n")
                # The endpoint answers throughout the flood, on new connections (once the idle
                # sockets time out when the descriptors ran out first).
                for _ in range(10):
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=6) as probe:
                        assert (await probe.get("/healthz")).status_code == 200
                    await asyncio.sleep(0.3)
                # The trickling request is cut at the request deadline (2 s), not served.
                slow.settimeout(5)
                started = time.monotonic()
                closed = False
                while time.monotonic() - started < 5:
                    try:
                        slow.sendall(b"X")
                    except OSError:
                        closed = True
                        break
                    try:
                        slow.settimeout(0.3)
                        if slow.recv(1) == b"":
                            closed = True
                            break
                    except TimeoutError:
                        pass
                assert closed, "a trickling request was kept open"
                # Every idle socket was closed by the daemon: displaced or timed out.
                await asyncio.sleep(2.5)
                for sock in sockets[:IDLE_SOCKETS]:
                    sock.settimeout(2)
                    with contextlib.suppress(ConnectionResetError):
                        assert sock.recv(1) == b""
        finally:
            for sock in sockets:
                sock.close()
            daemon.terminate()
            _, stderr = await asyncio.wait_for(daemon.communicate(), timeout=20)
    await conn.close()
    assert daemon.returncode == 0, stderr.decode()[-2000:]
    lines = stderr.decode().splitlines()
    # A start-up sync and a stop are about 20 lines; the flood adds a few at most.
    assert len(lines) < 60, "\n".join(lines[-40:])
    events = [line.get("event") for line in log_lines(stderr)]
    assert "daemon.stopped" in events


def test_a_repeated_error_is_logged_at_a_bounded_rate() -> None:
    """100,000 accept() errors within 25 s of a clock: three lines, the later ones counting the dropped."""
    now = [0.0]
    repeats = RepeatFilter(interval=10, clock=lambda: now[0])
    logger = logging.getLogger("asyncio")
    kept: list[str] = []
    for i in range(100_000):
        now[0] = i * 25 / 100_000
        record = logger.makeRecord(
            "asyncio",
            logging.ERROR,
            __file__,
            1,
            "socket.accept() out of system resource\nsocket: <socket fd=%d>",
            (i,),
            None,
        )
        if repeats.filter(record):
            kept.append(record.getMessage().split("\n", 1)[0])
    assert len(kept) == 3
    assert kept[0] == "socket.accept() out of system resource"
    assert "more like this dropped" in kept[1]
    other = logger.makeRecord("asyncio", logging.ERROR, __file__, 1, "another error", (), None)
    assert repeats.filter(other)
