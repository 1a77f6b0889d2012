"""The container's exact entry command, run as a real process: health check, JSON logs, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cost_sync.hostwinds.sandbox import Faults, SandboxServer, load_demo_fleet
from tests.integration.conftest import dump, seed

pytestmark = pytest.mark.db

DOCKERFILE = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
ROWS: list[tuple[str | None, str, str | None]] = [
    ("1234567", "active", None),
    ("1234568", "active", "10.50"),
    ("1234570", "active", None),
]


def exec_form(instruction: str) -> list[str]:
    """The JSON exec form of a Dockerfile instruction (the last one of that name)."""
    found = re.findall(rf"^{instruction}\s+(\[.*\])\s*$", DOCKERFILE, re.M)
    return list(json.loads(found[-1]))


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's CMD, in exec form."""
    match = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD\s+(\[.*\])", DOCKERFILE)
    assert match, "the Dockerfile has a HEALTHCHECK with an exec-form CMD"
    return list(json.loads(match[1]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entry_command() -> list[str]:
    """ENTRYPOINT + CMD, with the console script of this environment."""
    command = exec_form("ENTRYPOINT") + exec_form("CMD")
    assert command[0] == "cost-sync"
    return [str(Path(sys.executable).with_name("cost-sync")), *command[1:]]


async def start_daemon(
    db_url: str, sandbox_url: str, api_key: str, port: int, grace: float
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "COST_SYNC_DATABASE_URL": db_url,
        "COST_SYNC_HOSTWINDS_URL": sandbox_url,
        "COST_SYNC_HOSTWINDS_API_KEY": api_key,
        "COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "0",
        "COST_SYNC_ADMIN_LISTEN": f"0.0.0.0:{port}",  # as the image sets it
        "COST_SYNC_SHUTDOWN_GRACE_SECONDS": str(grace),
    }
    return await asyncio.create_subprocess_exec(
        *entry_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def log_lines(stderr: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]


async def test_sigterm_mid_run_cancels_it_and_changes_nothing(db_url: str) -> None:
    """SIGTERM during a slow run: the run is cancelled after the grace period, no row changes, exit 0."""
    conn = await asyncpg.connect(db_url)
    await seed(conn, ROWS)
    before = (await dump(conn))[0]
    fleet = load_demo_fleet()
    async with SandboxServer(fleet, faults=Faults(latency_seconds=3.0)) as sandbox:
        daemon = await start_daemon(db_url, sandbox.url, fleet.api_key, free_port(), grace=0.5)
        try:
            await wait_until(lambda: sandbox.requests["get_instances"] >= 1)
            daemon.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(daemon.communicate(), timeout=20)
        finally:
            if daemon.returncode is None:
                daemon.kill()
    assert daemon.returncode == 0, stderr.decode()[-2000:]
    assert (await dump(conn))[0] == before
    run = await conn.fetchrow("SELECT outcome, error FROM cost_sync_runs")
    await conn.close()
    assert run["outcome"] == "failed"
    assert "cancelled" in run["error"]
    events = [line["event"] for line in log_lines(stderr)]
    assert "daemon.stopped" in events


async def test_entry_command_serves_healthcheck_logs_json_and_stops_cleanly(db_url: str) -> None:
    """The image's command syncs at start-up, passes its HEALTHCHECK, logs JSON with run ids, exits 0."""
    conn = await asyncpg.connect(db_url)
    await seed(conn, ROWS)
    fleet = load_demo_fleet()
    port = free_port()
    async with SandboxServer(fleet) as sandbox:
        daemon = await start_daemon(db_url, sandbox.url, fleet.api_key, port, grace=5)
        try:

            async def synced() -> bool:
                return bool(
                    await conn.fetchval("SELECT count(*) FROM cost_sync_runs WHERE outcome = 'succeeded'")
                )

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while not await synced():
                assert loop.time() < deadline, "no successful start-up sync"
                await asyncio.sleep(0.1)
            check = healthcheck_command()
            check = [
                sys.executable if check[0] == "python" else check[0],
                *(a.replace("9464", str(port)) for a in check[1:]),
            ]
            health = await asyncio.create_subprocess_exec(*check)
            assert await health.wait() == 0
            daemon.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(daemon.communicate(), timeout=20)
        finally:
            if daemon.returncode is None:
                daemon.kill()
    assert daemon.returncode == 0
    assert (
        await conn.fetchval(
            "SELECT approximate_cost::text FROM vps_instances WHERE hostwinds_instance_id = '1234568'"
        )
        == "9.99"
    )
    await conn.close()
    lines = log_lines(stderr)
    finished = [line for line in lines if line["event"] == "sync.finished"]
    assert finished
    assert finished[0]["trigger"] == "startup"
    assert re.fullmatch(r"[0-9a-f-]{36}", finished[0]["run_id"])
    assert fleet.api_key not in stderr.decode()
