"""`docker compose up` without Docker: compose.yaml's own steps, run as real processes, price the demo fleet.

The db's init scripts (as compose mounts them, in order) on a fresh PostgreSQL database, the migrate
service's entrypoint, the sandbox service's command and the cost-sync service's command with the
environment and secret files compose gives them; only the hosts and ports are this machine's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cost_sync.cli.demo import DEMO_ROWS
from tests.compose_model import ROOT, project

pytestmark = pytest.mark.db

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environ_of(compose: dict[str, Any], service: str, secrets: dict[str, Path]) -> dict[str, str]:
    """The service's environment; /run/secrets/NAME is ``secrets[NAME]`` or the file compose mounts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COST_SYNC_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    for key, value in compose["services"][service].get("environment", {}).items():
        value = str(value)
        if value.startswith("/run/secrets/"):
            name = value.removeprefix("/run/secrets/")
            assert name in compose["services"][service]["secrets"]
            value = str(secrets.get(name, ROOT / compose["secrets"][name]["file"]))
        env[key] = value
    return env


def read_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - http://127.0.0.1 only
        return json.load(answer)


def run_init_scripts(compose: dict[str, Any]) -> list[Path]:
    """The SQL files the db service mounts into /docker-entrypoint-initdb.d/, in the image's order."""
    mounts = sorted(
        (target, ROOT / source)
        for source, target, *_ in (volume.split(":") for volume in compose["services"]["db"]["volumes"])
        if target.startswith("/docker-entrypoint-initdb.d/")
    )
    return [source for _, source in mounts]


async def test_compose_up_prices_the_demo_fleet(empty_db_url: str, tmp_path: Path) -> None:
    """Seeded rows, migrate (its retry loop), the sandbox and the daemon: the demo fleet gets priced."""
    compose = project("compose.yaml")
    conn = await asyncpg.connect(empty_db_url)
    try:
        for script in run_init_scripts(compose):
            await conn.execute(script.read_text())
        assert await conn.fetchval("SELECT count(*) FROM vps_instances") == len(DEMO_ROWS)

        database_url = tmp_path / "database_url"
        database_url.write_text(empty_db_url + "\n")
        secrets = {"database_url": database_url}

        migrate = await asyncio.to_thread(
            subprocess.run,
            compose["services"]["migrate"]["entrypoint"],
            env=environ_of(compose, "migrate", secrets),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stderr[-2000:]

        sandbox_port = free_port()
        command = [
            "127.0.0.1" if arg == "0.0.0.0" else str(sandbox_port) if arg == "8080" else arg  # noqa: S104
            for arg in compose["services"]["sandbox"]["command"]
        ]
        sandbox = await asyncio.create_subprocess_exec(
            str(BIN / "cost-sync"),
            *command,
            env=environ_of(compose, "sandbox", secrets),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        daemon: asyncio.subprocess.Process | None = None
        try:
            probe = compose["services"]["sandbox"]["healthcheck"]["test"][-1].replace(
                "8080", str(sandbox_port)
            )
            for _ in range(100):
                healthy = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                if await healthy.wait() == 0:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the sandbox never passed its healthcheck")

            env = environ_of(compose, "cost-sync", secrets)
            assert env["COST_SYNC_HOSTWINDS_URL"] == "http://sandbox:8080/cloud/api.php"
            env["COST_SYNC_HOSTWINDS_URL"] = f"http://127.0.0.1:{sandbox_port}/cloud/api.php"
            admin_port = free_port()
            env["COST_SYNC_ADMIN_LISTEN"] = f"127.0.0.1:{admin_port}"
            # The sandbox's rate does not matter here; the default 2/s only makes the test slower.
            env["COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND"] = "0"
            daemon = await asyncio.create_subprocess_exec(
                str(BIN / "cost-sync"),
                *compose["services"]["cost-sync"]["command"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            run = None
            for _ in range(600):
                run = await conn.fetchrow(
                    "SELECT id, outcome, rows_in_scope, updated FROM cost_sync_runs"
                    " WHERE outcome <> 'running'"
                )
                if run is not None or daemon.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            assert run is not None, (
                daemon.stderr.read().decode()[-2000:] if daemon.poll() is not None else "no run"
            )
            assert run["outcome"] == "succeeded"
            in_scope = sum(1 for _, status, _ in DEMO_ROWS if status != "decommissioned")
            assert run["rows_in_scope"] == in_scope
            assert run["updated"] > 0
            listed = await asyncio.to_thread(read_json, f"http://127.0.0.1:{admin_port}/runs")
            assert [r["run_id"] for r in listed["runs"]] == [str(run["id"])]
        finally:
            for process in (daemon, sandbox):
                if process is not None and process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(process.communicate(), timeout=30)
                    except TimeoutError:
                        process.kill()
                        await process.wait()
        costs = dict(await conn.fetch("SELECT hostwinds_instance_id, approximate_cost FROM vps_instances"))
    finally:
        await conn.close()
    # Priced as the demo fleet documents (src/cost_sync/data/demo-fleet.toml).
    assert costs["1234567"] == Decimal("4.99")
    assert costs["1234568"] == Decimal("9.99")
    assert costs["1234578"] == Decimal("23.99")
    assert costs["7654321"] == Decimal("12.00")  # unknown at Hostwinds: kept
    assert costs["1234579"] == Decimal("4.24")  # decommissioned: out of scope, untouched
    assert daemon is not None
    assert daemon.returncode == 0
