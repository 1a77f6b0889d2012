"""A PgBouncer in transaction mode for ``python bench/run.py --pgbouncer``.

cost-sync's own connections (``[database] url`` of the measured runs and the daemon) go through
it, as on NileDB or a pooled deployment; the reference statements (write floor, history floor,
naive baseline) and the seeding stay on the direct connection, so the ratios compare cost-sync
through the pooler with the same floors as a direct run. PgBouncer is Debian's package; as root
it is started with ``-u postgres``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: Server connections per database: cost-sync's pool holds at most 4, the daemon's a few more.
POOL_SIZE = 10
_START_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _program() -> str:
    for candidate in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("--pgbouncer needs PgBouncer (Debian package pgbouncer)")


async def version() -> str:
    """``PgBouncer 1.18.0``, as the program says."""
    proc = await asyncio.create_subprocess_exec(
        _program(), "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode().splitlines()[0].strip() if out else "PgBouncer"


def through(bouncer_port: int, database_url: str) -> str:
    """``database_url`` (a database of the server PgBouncer fronts) through PgBouncer."""
    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{bouncer_port}"))


@contextlib.asynccontextmanager
async def pgbouncer(server_url: str) -> AsyncIterator[int]:
    """Run PgBouncer (transaction mode) in front of ``server_url``'s server; yield its port."""
    parts = urlsplit(server_url)
    if not parts.hostname:
        raise RuntimeError("--pgbouncer needs a PostgreSQL reachable over TCP (give --database-url)")
    folder = Path(tempfile.mkdtemp(prefix="cost-sync-bench-pgbouncer-"))
    os.chmod(folder, 0o777)  # noqa: S103 - PgBouncer runs as postgres and writes its log here
    port = _free_port()
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={parts.hostname} port={parts.port or 5432} user={parts.username or 'postgres'}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        f"default_pool_size = {POOL_SIZE}\nmax_client_conn = 500\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n",
        encoding="utf-8",
    )
    command = [_program(), str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_SECONDS
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"pgbouncer exited {proc.returncode}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            if loop.time() > deadline:
                raise RuntimeError(f"pgbouncer did not listen on {port} within {_START_SECONDS:g} s")
            await asyncio.sleep(0.05)
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
