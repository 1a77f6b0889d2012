"""cost-sync's benchmark: one command, the sandbox Hostwinds API (rate limit off), a real PostgreSQL.

    python bench/run.py [--large] [--database-url URL] [--pgbouncer]

For N = 1,000 and 10,000 instances (and 100,000 with ``--large``), each in a fresh database
seeded with N ``active`` rows, it measures a cold sync (every row changes, the price cache empty),
a warm sync (nothing changed, every price cached), the write floor (the same final values in one
raw ``UPDATE ... FROM unnest``), the history floor (that update plus the same history rows in one
statement) and a naive baseline (one ``UPDATE`` per row). Each N is measured in a child process
(``bench/child.py``) so that its peak RSS is cost-sync's own, against ``cost-sync sandbox
--generate N`` running in another process. Then, up to N = 10,000, ``bench/cache_figures.py``
measures the price cache: an outage halfway through a cold run, ``--hours`` simulated hourly runs,
and a resync's latency during a rate-limited cold sync in the daemon. Pricing throughput is
measured in-process on 100,000 synthetic rows on every run.

It prints a table and each target with PASS/MISS, and saves ``bench/results/<UTC timestamp>.json``,
``bench/results/latest.json`` and ``bench/results/latest.png`` (time against N). With
``--pgbouncer`` cost-sync's connections go through a PgBouncer in transaction mode that the
benchmark starts (``bench/pooler.py``), and the results are saved as ``latest-pgbouncer.*``. See
``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

import pgdb
import pooler
from child import API_KEY_ENV, DATABASE_URL_ENV, RUN_DATABASE_URL_ENV
from cost_sync import __version__
from cost_sync.hostwinds.sandbox import SANDBOX_API_KEY
from cost_sync.runtime import logs
from cost_sync.store.db import describe_dsn, scrub
from figures import CUSTOM_PLAN_EXECUTIONS, CacheFigures, SizeFigures
from fleet import generate_fleet, seed_rows
from pgdb import Server
from pricing_throughput import PRICING_N, PricingFigures, measure_pricing
from report import cache_table, judge, plot, summarise, table, targets_json, targets_text

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_SIZES = (1_000, 10_000)
LARGE_N = 100_000
#: Above this size the syncs and the naive baseline are timed once, not ``--repeat`` times (a sync
#: of 100,000 makes 100,000 HTTP calls), and the 6th-write cold sync is not measured.
REPEAT_MAX_N = 10_000
#: Above this size the price-cache figures (outage, simulated hours, resync) are not measured:
#: they are counts and a rate-limited latency, and the issue states them at 1,000 and 10,000.
CACHE_MAX_N = 10_000
_SANDBOX_START_SECONDS = 300.0
_CHILD_SECONDS = 3600.0
_STOP_SECONDS = 10.0
_URL = re.compile(r"https?://\S+")
_BENCH_SCRIPTS = ("run.py", "child.py", "cache_figures.py", "explain_write.py")


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _environment(**extra: str) -> dict[str, str]:
    """The environment for a child: no COST_SYNC_* settings of the caller's, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("COST_SYNC_")}
    env.update(extra)
    return env


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Terminate a child (SIGTERM, then SIGKILL after a grace period) and reap it."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), _STOP_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.asynccontextmanager
async def sandbox(n: int, log: Path) -> AsyncIterator[str]:
    """``cost-sync sandbox --generate N --port 0`` in a process of its own; yields its API URL."""
    command = [
        sys.executable,
        "-c",
        "import sys; from cost_sync.cli.main import main; sys.exit(main())",
        "sandbox",
        "--generate",
        str(n),
        "--port",
        "0",
    ]
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=_environment()
        )
    try:
        assert process.stdout is not None
        try:
            first = await asyncio.wait_for(process.stdout.readline(), _SANDBOX_START_SECONDS)
        except TimeoutError:
            first = b""
        found = _URL.search(first.decode(errors="replace"))
        if found is None:
            raise RuntimeError(f"the sandbox for N={n:,} did not start:\n{_tail(log)}")
        yield found.group(0)
    finally:
        await _stop(process)


async def run_child(
    n: int, *, database_url: str, run_url: str, sandbox_url: str, repeat: int, workdir: Path
) -> SizeFigures:
    """Measure one size in ``bench/child.py``; its figures, or RuntimeError with its log's tail."""
    out = workdir / f"figures-{n}.json"
    log = workdir / f"child-{n}.log"
    small = n <= REPEAT_MAX_N
    command = [
        sys.executable,
        str(BENCH_DIR / "child.py"),
        f"--n={n}",
        f"--sandbox-url={sandbox_url}",
        f"--repeat={repeat if small else 1}",
        f"--floor-repeat={repeat}",
        f"--naive-repeat={repeat if small else 1}",
        *(["--late"] if small else []),
        f"--out={out}",
    ]
    env = _environment(
        **{DATABASE_URL_ENV: database_url, RUN_DATABASE_URL_ENV: run_url, API_KEY_ENV: SANDBOX_API_KEY}
    )
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(*command, stdout=output, stderr=output, env=env)
    try:
        code = await asyncio.wait_for(process.wait(), _CHILD_SECONDS)
    finally:
        await _stop(process)
    if code != 0 or not out.exists():
        raise RuntimeError(f"the measurement of N={n:,} failed (exit {code}):\n{_tail(log)}")
    figures: SizeFigures = json.loads(out.read_text(encoding="utf-8"))
    return figures


async def run_cache_child(
    n: int, *, database_url: str, run_url: str, hours: int, workdir: Path
) -> CacheFigures:
    """Measure one size's price-cache figures in ``bench/cache_figures.py``; RuntimeError on failure."""
    out = workdir / f"cache-{n}.json"
    log = workdir / f"cache-{n}.log"
    command = [
        sys.executable,
        str(BENCH_DIR / "cache_figures.py"),
        f"--n={n}",
        f"--hours={hours}",
        f"--out={out}",
    ]
    env = _environment(**{DATABASE_URL_ENV: database_url, RUN_DATABASE_URL_ENV: run_url})
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(*command, stdout=output, stderr=output, env=env)
    try:
        code = await asyncio.wait_for(process.wait(), _CHILD_SECONDS)
    finally:
        await _stop(process)
    if code != 0 or not out.exists():
        raise RuntimeError(f"the cache measurements of N={n:,} failed (exit {code}):\n{_tail(log)}")
    figures: CacheFigures = json.loads(out.read_text(encoding="utf-8"))
    return figures


async def measure_size(
    server: Server, n: int, *, repeat: int, hours: int, workdir: Path, bouncer: int | None = None
) -> tuple[SizeFigures, CacheFigures | None]:
    """A fresh database and sandbox for ``n`` instances, both children's figures, everything removed.

    With ``bouncer`` (a PgBouncer's port) cost-sync's own connections go through it."""
    name = f"cost_sync_bench_{os.getpid()}_{n}"
    progress(f"N={n:,}: seeding database {name}")
    rows = seed_rows(generate_fleet(n))
    try:
        database_url = await pgdb.create(server.url, name, rows)
        run_url = pooler.through(bouncer, database_url) if bouncer is not None else database_url
        del rows
        progress(f"N={n:,}: starting the sandbox")
        async with sandbox(n, workdir / f"sandbox-{n}.log") as sandbox_url:
            progress(f"N={n:,}: measuring (sandbox at {sandbox_url})")
            started = time.perf_counter()
            figures = await run_child(
                n,
                database_url=database_url,
                run_url=run_url,
                sandbox_url=sandbox_url,
                repeat=repeat,
                workdir=workdir,
            )
            progress(f"N={n:,}: done in {time.perf_counter() - started:.1f} s")
        if n > CACHE_MAX_N:
            return figures, None
        # The cache figures serve the fleet from their own process (they change it as they go).
        progress(f"N={n:,}: price cache: outage, {hours} simulated hours, resync during a cold sync")
        started = time.perf_counter()
        cache = await run_cache_child(
            n, database_url=database_url, run_url=run_url, hours=hours, workdir=workdir
        )
        progress(f"N={n:,}: price cache done in {time.perf_counter() - started:.1f} s")
        return figures, cache
    finally:
        await pgdb.drop(server.url, name)


def _git() -> dict[str, Any]:
    """The commit, and what identifies the source the benchmark runs: the src/ and sql/ trees."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False
        ).stdout.strip()

    # Uncommitted changes to src/ and sql/ as a digest, so that any edit shows.
    diff = git("diff", "HEAD", "--", "src", "sql")
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "src_tree": git("rev-parse", "HEAD:src") or None,
        "sql_tree": git("rev-parse", "HEAD:sql") or None,
        "uncommitted_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
    }


def same_source(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """True when src/ and sql/ are the same (a commit touching only bench/ or docs/ does not count)."""
    keys = ("src_tree", "sql_tree", "uncommitted_diff_sha256")
    return all(before.get(key) == after.get(key) for key in keys)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cost_sync": __version__,
        "git": _git(),
    }


def other_benchmarks() -> list[int]:
    """Pids of other cost-sync benchmark processes on this machine (they would skew the timings)."""
    me = psutil.Process()
    # Not this run's own: itself, its children, and what started it (`timeout python bench/run.py`).
    mine = {me.pid, *(p.pid for p in me.children(recursive=True)), *(p.pid for p in me.parents())}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["pid"] not in mine and any(f"bench/{name}" in cmdline for name in _BENCH_SCRIPTS):
            found.append(process.info["pid"])
    return found


async def watch_for_other_benchmarks(seen: set[int], every: float = 5.0) -> None:
    """Add the pids of other benchmark processes to ``seen`` every few seconds, until cancelled."""
    while True:
        seen.update(other_benchmarks())
        await asyncio.sleep(every)


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, a database password replaced by ``***``."""
    text = " ".join(["python", "bench/run.py", *argv])
    for arg in argv:
        if "://" in arg:
            text = scrub(text, arg.split("=", 1)[-1])
    return text


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def save(results: dict[str, Any], stamp: str, latest: str = "latest") -> tuple[Path, Path]:
    """The JSON under its timestamp and as ``<latest>.json``; returns both paths."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    stamped = RESULTS_DIR / f"{stamp}.json"
    _write(stamped, text)
    _write(RESULTS_DIR / f"{latest}.json", text)
    return stamped, RESULTS_DIR / f"{latest}.json"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark cost-sync against the sandbox Hostwinds API and a real PostgreSQL.",
    )
    parser.add_argument("--large", action="store_true", help=f"also measure N = {LARGE_N:,}")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help=f"PostgreSQL server to create the benchmark databases on (default: ${pgdb.ENV_URL}, "
        f"else {pgdb.LOCAL_URL} if it answers, else an embedded PostgreSQL)",
    )
    parser.add_argument(
        "--sizes",
        metavar="N,N,...",
        help="fleet sizes instead of 1000,10000 (--large adds 100000); for quick checks",
    )
    parser.add_argument(
        "--hours",
        type=int,
        default=48,
        help="hourly runs simulated on a virtual clock after the cold run (default: 48)",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="run cost-sync's connections through a PgBouncer in transaction mode that the benchmark "
        "starts (Debian package pgbouncer); the floors stay direct; saved as latest-pgbouncer.*",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help=f"timed repetitions of each measurement, 1 to {CUSTOM_PLAN_EXECUTIONS} (default: 3)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")] if args.sizes else list(DEFAULT_SIZES)
    if args.large and LARGE_N not in sizes:
        sizes.append(LARGE_N)
    if not 1 <= args.repeat <= CUSTOM_PLAN_EXECUTIONS:
        # More cold syncs would reach the 6th write on the connection, measured on its own.
        parser.error(f"--repeat must be 1 to {CUSTOM_PLAN_EXECUTIONS}")
    if args.hours < 1:
        parser.error("--hours must be at least 1")
    if any(n < 1 for n in sizes):
        parser.error("every size must be at least 1")
    args.sizes = sorted(set(sizes))
    return args


async def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Measure, print, save; 0 when every figure was produced (a MISS is a reading, not a failure)."""
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM as Ctrl-C: cancel, so that every `finally` stops the children and drops the databases.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    host = machine()
    progress(f"machine: {host['nproc']} CPU ({host['cpu']}), {host['memory_gb']} GB")
    # Another benchmark on the same CPUs skews every timing: look for one all along.
    others = set(other_benchmarks())
    watcher = asyncio.create_task(watch_for_other_benchmarks(others))
    if others:
        progress(f"WARNING: other benchmark processes are running ({sorted(others)}): timings will be skewed")
    progress(f"pricing throughput: price_rows over {PRICING_N:,} synthetic rows")
    pricing: PricingFigures = measure_pricing(PRICING_N, repeat=args.repeat)
    sizes: list[SizeFigures] = []
    caches: list[CacheFigures] = []
    bouncer_version = await pooler.version() if args.pgbouncer else None
    async with pgdb.server(args.database_url) as server, contextlib.AsyncExitStack() as stack:
        postgres = await pgdb.describe(server.url)
        progress(f"PostgreSQL {postgres['version']} at {describe_dsn(server.url)} ({server.origin})")
        bouncer = await stack.enter_async_context(pooler.pgbouncer(server.url)) if args.pgbouncer else None
        if bouncer is not None:
            progress(
                f"cost-sync's connections through {bouncer_version} (transaction mode) on port {bouncer}"
            )
        with tempfile.TemporaryDirectory(prefix="cost-sync-bench-") as workdir:
            for n in args.sizes:
                size, cache = await measure_size(
                    server, n, repeat=args.repeat, hours=args.hours, workdir=Path(workdir), bouncer=bouncer
                )
                sizes.append(size)
                if cache is not None:
                    caches.append(cache)

    summaries = [summarise(size) for size in sizes]
    targets = judge(summaries, pricing, caches)
    command = command_line(argv)
    git_at_end = _git()
    watcher.cancel()
    others.update(other_benchmarks())
    print(f"$ {command}")
    if others:
        print(
            f"WARNING: other benchmark processes ran at the same time ({sorted(others)}): timings are skewed"
        )
    if not same_source(host["git"], git_at_end):
        print(
            f"WARNING: cost-sync's src/ or sql/ changed during the run ({host['git']['commit']} -> "
            f"{git_at_end['commit']}): the figures may mix two versions; run again"
        )
    print(
        f"machine: {host['nproc']} CPU ({host['cpu']}), {host['memory_gb']} GB RAM; "
        f"PostgreSQL {postgres['version']} ({server.origin}); Python {host['python']}; "
        f"cost-sync {host['cost_sync']}"
    )
    if bouncer_version is not None:
        print(
            f"cost-sync's connections through {bouncer_version}, pool_mode transaction, "
            f"default_pool_size {pooler.POOL_SIZE} (the floors and the naive baseline stay direct)"
        )
    print("medians over the repetitions; sandbox rate limit off, max_concurrency 16\n")
    print(table(summaries))
    print("Hostwinds calls: inst = get_instances, list = get_price_list, cycle = get_billingcycle_prices")
    print(
        f"\npricing, in-process: price_rows over {pricing['instances']:,} rows: "
        f"{pricing['median_seconds']:.3f} s (median of {len(pricing['seconds'])})\n"
    )
    print(cache_table(caches))
    print()
    print(targets_text(targets))

    results = {
        "schema": 2,
        "command": command,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": host,
        "git_at_end": git_at_end,
        "other_benchmarks_seen": sorted(others),
        "load_average_at_end": list(os.getloadavg()),
        "postgres": {**postgres, "origin": server.origin},
        "pgbouncer": None
        if bouncer_version is None
        else {"version": bouncer_version, "pool_mode": "transaction", "default_pool_size": pooler.POOL_SIZE},
        "conditions": {
            "repeat": args.repeat,
            "syncs_and_naive_repeat_above_10000": 1,
            "hostwinds": {"requests_per_second": 0, "max_concurrency": 16, "sandbox": "separate process"},
            "price_cache": {
                "sandbox": "in the measuring process",
                "sizes": [cache["n"] for cache in caches],
                "simulated_hours": args.hours,
                "resync_hostwinds": {"requests_per_second": 20, "max_concurrency": 16},
                "resync_max_run_seconds": 15,
            },
        },
        "pricing_throughput": pricing,
        "summary": summaries,
        "sizes": sizes,
        "price_cache": caches,
        "targets": targets_json(targets),
    }
    name = "latest-pgbouncer" if args.pgbouncer else "latest"
    stamped, latest = save(results, stamp, name)
    png = RESULTS_DIR / f"{name}.png"
    plot(summaries, pricing, png)
    saved = ", ".join(_shown(path) for path in (stamped, latest, png))
    print(f"\nsaved {saved}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark with ``argv`` (default: the process's arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logs.configure(level="warning")  # migrate.applied and the like would land among the figures
    try:
        return asyncio.run(run(args, argv))
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("bench: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
