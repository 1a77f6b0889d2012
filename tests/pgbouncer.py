"""A real PgBouncer in transaction mode in front of the test PostgreSQL, as NileDB and pooled
deployments put one in front of cost-sync.

Debian's ``pgbouncer`` package; it refuses to run as root, so it is started with ``-u postgres``
when the tests run as root. Its server pool is kept small (``default_pool_size = 2``) so that
clients really share server connections, which is what breaks session state.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.system_tools import need_program

__all__ = ["PgBouncer", "free_port", "run_pgbouncer"]


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgBouncer:
    """A running PgBouncer: :meth:`url` maps a direct database URL to one through it."""

    def __init__(self, port: int, folder: Path, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.folder = folder
        self.process = process

    def url(self, direct: str) -> str:
        """``direct`` (a URL of the test server) through this PgBouncer."""
        parts = urlsplit(direct)
        user = parts.username or "postgres"
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}"))

    def log(self) -> str:
        """What PgBouncer logged so far."""
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def run_pgbouncer(server_url: str, *, pool_size: int = 2) -> Iterator[PgBouncer]:
    """Start PgBouncer (transaction mode) in front of ``server_url``'s server; stop it on exit."""
    program = need_program("pgbouncer", package="pgbouncer")
    parts = urlsplit(server_url)
    if not parts.hostname:
        pytest.skip("the test PostgreSQL has no TCP address for PgBouncer to reach")
    folder = Path(tempfile.mkdtemp(prefix="cost-sync-pgbouncer-"))
    os.chmod(folder, 0o777)  # noqa: S103 - PgBouncer runs as postgres and writes its log here
    port = free_port()
    user = parts.username or "postgres"
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={parts.hostname} port={parts.port or 5432} user={user}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = any\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 500\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
        f"pidfile = {folder / 'pgbouncer.pid'}\n",
        encoding="utf-8",
    )
    command = [program, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bouncer = PgBouncer(port, folder, process)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                pytest.fail(f"pgbouncer exited {process.returncode}: {err}{bouncer.log()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"pgbouncer did not listen on {port}: {bouncer.log()}")
            time.sleep(0.05)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)
