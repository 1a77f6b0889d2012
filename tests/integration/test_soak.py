"""Soak: the daemon on a 1 s schedule against the sandbox with random faults and resync triggers.

Short by default (COST_SYNC_TEST_SOAK_SECONDS, 10 s) so CI runs it on every push; run it longer
with e.g. ``COST_SYNC_TEST_SOAK_SECONDS=120 pytest -m soak``.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import asyncpg
import httpx
import pytest
from apscheduler.triggers.interval import IntervalTrigger

from cost_sync.daemon.runs import RunState
from cost_sync.daemon.service import Daemon
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sandbox import SandboxServer, load_demo_fleet
from cost_sync.settings import Settings
from tests.integration.conftest import seed

pytestmark = [pytest.mark.db, pytest.mark.soak]

SOAK_SECONDS = float(os.environ.get("COST_SYNC_TEST_SOAK_SECONDS", "10"))
TOKEN = "soak-admin-token"
ROWS: list[tuple[str | None, str, str | None]] = [
    (str(sid), "active", None) for sid in range(1234567, 1234580)
] + [("424242", "active", "3.00")]
NOT_STARTED = "not started: the daemon stopped"


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


def open_fds() -> tuple[int, int]:
    """File descriptors this process has open: (sockets, everything else)."""
    sockets = others = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the descriptor listdir itself used, now closed
            continue
        if target.startswith("socket:"):
            sockets += 1
        else:
            others += 1
    return sockets, others


def random_faults(rng: random.Random) -> dict[str, Any]:
    """One random fault setting for POST /_sandbox/faults."""
    actions = rng.choice([None, ["get_billingcycle_prices"], ["get_price_list"], ["get_instances"]])
    kind = rng.choice(["none", "latency", "503", "html", "429", "auth"])
    faults: dict[str, Any] = {"actions": actions}
    if kind == "latency":
        faults["latency_seconds"] = rng.uniform(0.05, 0.6)
    elif kind == "503":
        faults["fail_next"] = rng.randint(1, 3)
    elif kind == "html":
        faults["html_next"] = rng.randint(1, 2)
    elif kind == "429":
        faults.update(rate_limit_next=1, retry_after=0)
    elif kind == "auth":
        faults["auth_error"] = True
    return faults


async def test_daemon_soak_records_every_run_and_stays_flat(pool: asyncpg.Pool) -> None:
    """Random faults and resyncs for SOAK_SECONDS: every run in the ledger, none stuck, RSS and fds flat."""
    rng = random.Random(10)
    await seed(pool, ROWS)
    fleet = load_demo_fleet()
    settings = Settings(
        admin={"listen": "127.0.0.1:0", "token": TOKEN},  # type: ignore[arg-type]
        sync={"shutdown_grace_seconds": 3, "max_run_seconds": 5},  # type: ignore[arg-type]
        database={"lock_timeout_seconds": 5},  # type: ignore[arg-type]
    )
    samples: list[tuple[float, int, tuple[int, int]]] = []
    sockets_before, _ = open_fds()
    pool_before = pool.get_size()
    async with (
        SandboxServer(fleet) as sandbox,
        httpx.AsyncClient(timeout=10) as control,
        httpx.AsyncClient(timeout=5) as http,
    ):
        client = HostwindsClient(
            http,
            fleet.api_key,
            url=sandbox.url,
            requests_per_second=None,
            attempts=2,
            timeout=2.0,
            backoff_initial=0.05,
            backoff_max=0.2,
            retry_after_max=0.5,
        )
        daemon = Daemon(settings, client, pool, trigger=IntervalTrigger(seconds=1))
        stop = asyncio.Event()
        serving = asyncio.create_task(daemon.serve(stop, initial_sync=True))
        loop = asyncio.get_running_loop()
        for _ in range(250):
            if daemon.admin_url is not None:
                break
            await asyncio.sleep(0.02)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        started = loop.time()
        while (elapsed := loop.time() - started) < SOAK_SECONDS:
            await control.post(f"{sandbox.base_url}/_sandbox/faults", json=random_faults(rng))
            if rng.random() < 0.5:
                targets = rng.sample([r[0] for r in ROWS] + ["no-such-row"], k=rng.randint(1, 3))
                answer = await control.post(
                    f"{daemon.admin_url}/resync", json={"instances": targets}, headers=auth
                )
                # A target naming no row is refused before anything is queued.
                assert answer.status_code == (400 if "no-such-row" in targets else 202), answer.text
            samples.append((elapsed, rss_kib(), open_fds()))
            await asyncio.sleep(rng.uniform(0.2, 0.6))
        await control.delete(f"{sandbox.base_url}/_sandbox/faults")
        # A last run with no faults: the fleet ends right.
        final = daemon.runner.request(None, "resync")
        await asyncio.wait_for(final.done.wait(), timeout=30)
        samples.append((loop.time() - started, rss_kib(), open_fds()))
        stop.set()
        await asyncio.wait_for(serving, timeout=30)
    # The daemon stopped and its clients and the sandbox are closed: every socket they opened is
    # closed too, but for the connections the test's pool (max 4) opened on the daemon's behalf.
    sockets_after, _ = open_fds()
    pool_growth = pool.get_size() - pool_before

    assert final.state is RunState.SUCCEEDED, final.error
    records = list(daemon.runner.runs.values())
    assert all(r.state in {RunState.SUCCEEDED, RunState.FAILED} for r in records), "a run is stuck"
    finished = {r.run_id: r for r in records if r.error != NOT_STARTED}
    assert len(finished) >= SOAK_SECONDS / 2, "the schedule and triggers ran too few runs"
    ledger = {row["id"]: row["outcome"] for row in await pool.fetch("SELECT id, outcome FROM cost_sync_runs")}
    missing = [str(rid) for rid in finished if rid not in ledger]
    assert not missing, f"runs not in the ledger: {missing}"
    assert all(ledger[rid] == r.state.value for rid, r in finished.items())
    assert {o for o in ledger.values()} <= {"succeeded", "failed"}
    longest = await pool.fetchval("SELECT max(extract(epoch FROM finished - started)) FROM cost_sync_runs")
    assert longest < 20, "a run took far longer than its faults explain"
    priced = await pool.fetchval(
        "SELECT count(*) FROM vps_instances"
        " WHERE approximate_cost IS NOT NULL AND hostwinds_instance_id <> '424242'"
    )
    assert priced >= 10

    outcomes = sorted(ledger.values())
    print(
        f"soak {SOAK_SECONDS:g} s: {len(finished)} runs ({outcomes.count('succeeded')} succeeded, "
        f"{outcomes.count('failed')} failed), RSS {samples[0][1]} -> {samples[-1][1]} KiB, "
        f"sockets {sockets_before} -> {sockets_after} (pool +{pool_growth}), "
        f"other fds {samples[0][2][1]} -> {samples[-1][2][1]}"
    )
    # Flat: after a warm-up (the first fifth), the end is within 10% of the warm-up's peak.
    warm = [s for s in samples if s[0] <= max(2.0, SOAK_SECONDS / 5)] or samples[:1]
    rss_base = max(s[1] for s in warm)
    rss_end = samples[-1][1]
    assert rss_end <= rss_base * 1.10, f"RSS grew from {rss_base} to {rss_end} KiB"
    # Descriptors that are not sockets (files, pipes, the loop's own) do not grow while it serves.
    others = [s[2][1] for s in samples]
    assert others[-1] <= min(others) + 1, f"non-socket fds grew from {min(others)} to {others[-1]}"
    # Sockets come and go with connections in flight (in-process, a sandbox connection is two), so
    # they are counted once everything is closed: none may be left but the pool's own.
    leaked = sockets_after - sockets_before - pool_growth
    assert leaked <= 0, f"{leaked} sockets left open after the daemon stopped"
