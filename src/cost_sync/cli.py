"""The ``cost-sync`` command: parses arguments, loads settings, configures logging, runs one verb.

Exit codes: 0 done; 1 the work failed (nothing was written); 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from cost_sync import __version__, admin, logs, progress, render, sandbox
from cost_sync.daemon import Daemon
from cost_sync.db import connect
from cost_sync.errors import ConfigError, CostSyncError
from cost_sync.migrate import check, migrate, rollback
from cost_sync.settings import Settings, load_settings
from cost_sync.sync import RunResult, open_resources, run_once

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the verb is not reset by the verb's own parser.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="TOML settings file (default: $COST_SYNC_CONFIG); COST_SYNC_* variables override it",
    )
    common.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=argparse.SUPPRESS,
        help="log verbosity on stderr (default: info)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, verbs included."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="cost-sync",
        parents=[common],
        description="Keep vps_instances.approximate_cost true from Hostwinds prices.",
    )
    parser.add_argument("--version", action="version", version=f"cost-sync {__version__}")
    once = parser.add_argument_group("one-shot sync (without --once, cost-sync runs the daemon)")
    once.add_argument("--once", action="store_true", help="run one sync now and exit")
    _sync_options(once)
    _daemon_options(parser)
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_run = verbs.add_parser(
        "run",
        parents=[common],
        help="run the daemon: scheduled syncs and the admin endpoint (the default)",
        description="Run the daemon until SIGTERM or SIGINT.",
    )
    _daemon_options(p_run)
    p_run.set_defaults(handler=_daemon)

    p_resync = verbs.add_parser(
        "resync",
        parents=[common],
        help="price the named instances now, e.g. after a plan upgrade",
        description="Sync the named instances now: through the daemon when COST_SYNC_ADMIN_URL is set "
        "(waiting for the outcome), else in this process. Serialised with every other run.",
    )
    targets = p_resync.add_mutually_exclusive_group(required=True)
    targets.add_argument(
        "--instance",
        action="append",
        metavar="ID",
        help="a row to sync (repeatable): hostwinds_instance_id, Hostwinds serviceid or server_uuid, "
        "or row id",
    )
    targets.add_argument("--all", action="store_true", help="the whole fleet instead")
    p_resync.add_argument(
        "--full",
        action="store_true",
        help="with --all: ask Hostwinds every instance's price afresh (named instances always are)",
    )
    p_resync.add_argument("--json", action="store_true", help="print the run report as JSON on stdout")
    p_resync.add_argument(
        "--wait",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="how long to wait for the daemon's run to finish (default: 900)",
    )
    p_resync.set_defaults(handler=_resync)

    p_demo = verbs.add_parser(
        "demo",
        parents=[common],
        help="run the whole job on embedded PostgreSQL and a SANDBOX Hostwinds; no key, no server",
        description="Start an embedded PostgreSQL and the SANDBOX Hostwinds API (made-up prices), "
        "seed a sample fleet, sync twice, print what was priced and how. Cleans up on exit.",
    )
    p_demo.add_argument(
        "--keep", action="store_true", help="leave the database and sandbox running until Ctrl-C"
    )
    p_demo.set_defaults(handler=_demo)

    p_sandbox = verbs.add_parser(
        "sandbox",
        parents=[common],
        help="serve a SANDBOX Hostwinds API (made-up data) on 127.0.0.1 for tests and trials",
        description="Serve a SANDBOX Hostwinds Cloud API from a fleet file (default: the demo fleet) "
        "until Ctrl-C. Point cost-sync at it with COST_SYNC_HOSTWINDS_URL and its API key.",
    )
    fleet = p_sandbox.add_mutually_exclusive_group()
    fleet.add_argument(
        "--fleet", type=Path, metavar="FILE", help="fleet file, .toml or .json (docs/sandbox.md)"
    )
    fleet.add_argument("--generate", type=int, metavar="N", help="a generated fleet of N instances instead")
    p_sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p_sandbox.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080; 0: any)")
    p_sandbox.set_defaults(handler=_sandbox)

    p_migrate = verbs.add_parser(
        "migrate",
        parents=[common],
        help="apply the SQL migrations in sql/ (each once, recorded with a checksum)",
        description="Apply pending migrations, or check or roll them back.",
    )
    mode = p_migrate.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 0 when every migration is applied and verifies, else 1",
    )
    mode.add_argument(
        "--rollback",
        metavar="VERSION",
        help="run one migration's rollback file (e.g. 0001) and forget it in the ledger",
    )
    p_migrate.set_defaults(handler=_migrate)
    return parser


def _sync_options(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--instance",
        action="append",
        metavar="ID",
        default=None,
        help="limit the run to this row (repeatable): a hostwinds_instance_id, a Hostwinds serviceid "
        "or server_uuid, or the row's id",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="compute everything, write nothing; print each change and the fleet's total before and after",
    )
    group.add_argument("--json", action="store_true", help="print the run report as JSON on stdout")
    group.add_argument(
        "--full",
        action="store_true",
        help="ask Hostwinds every instance's price afresh instead of using cached prices",
    )


def _daemon_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-initial-sync",
        action="store_true",
        default=argparse.SUPPRESS,
        help="daemon: wait for the schedule instead of syncing at start-up",
    )


def print_result(result: RunResult, *, as_json: bool) -> None:
    """Show a finished run: JSON for scripts, else a summary, the changes (dry run), unpriced rows."""
    if as_json:
        print(render.as_json(result.report, result.outcomes))
        return
    lines = render.summary(result.report)
    if result.report.dry_run:
        lines += render.changes(result.outcomes)
    lines += render.unpriced_rows(result.outcomes)
    print("\n".join(lines))


class _Terminated(CostSyncError):
    """Terminated by SIGTERM; the run was cancelled and recorded, nothing was written."""

    exit_code = 128 + signal.SIGTERM


@contextlib.asynccontextmanager
async def _sigterm_cancels_run() -> AsyncIterator[None]:
    """On SIGTERM, cancel this one-shot run as SIGINT does (ledger row "cancelled"), then exit 143."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = asyncio.Event()

    def terminate() -> None:
        terminated.set()
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (ValueError, RuntimeError):
        # Not the main thread (cli.main called from a worker thread): signals are not ours to take.
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        if terminated.is_set():
            raise _Terminated() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _once(args: argparse.Namespace, settings: Settings) -> int:
    async with (
        _sigterm_cancels_run(),
        open_resources(settings) as (client, pool),
        progress.terminal_bar() as bar,
    ):
        result = await run_once(
            client=client,
            pool=pool,
            settings=settings,
            trigger="once",
            targets=args.instance,
            dry_run=args.dry_run,
            full=args.full,
            progress=bar,
        )
    print_result(result, as_json=args.json)
    return 0


async def _daemon(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_resources(settings) as (client, pool):
        await Daemon(settings, client, pool).serve(
            stop, initial_sync=not getattr(args, "no_initial_sync", False)
        )
    return 0


async def _resync(args: argparse.Namespace, settings: Settings) -> int:
    targets = None if args.all else args.instance
    # Named instances are asked afresh: that is the after-upgrade case.
    full = args.full or targets is not None
    if settings.admin.url is None:
        async with (
            _sigterm_cancels_run(),
            open_resources(settings) as (client, pool),
            progress.terminal_bar() as bar,
        ):
            result = await run_once(
                client=client,
                pool=pool,
                settings=settings,
                trigger="resync",
                targets=targets,
                full=full,
                progress=bar,
            )
        print_result(result, as_json=args.json)
        return 0
    record = await admin.resync(settings, targets, wait=args.wait, full=full)
    return admin.show(record, as_json=args.json)


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.demo import run_demo

    return await run_demo(keep=args.keep)


async def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.generate is not None:
            fleet = sandbox.generate_fleet(args.generate)
        else:
            fleet = sandbox.load_fleet(args.fleet or sandbox.DEMO_FLEET_PATH)
    except sandbox.FleetFileError as exc:
        raise ConfigError(str(exc)) from None
    server = sandbox.SandboxServer(fleet, host=args.host, port=args.port)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"SANDBOX Hostwinds API (made-up data, not Hostwinds) listening on {server.url}\n"
        f"  {len(fleet.instances)} instances, {len(fleet.plans)} price-list rows\n"
        f"  COST_SYNC_HOSTWINDS_URL={server.url} COST_SYNC_HOSTWINDS_API_KEY={fleet.api_key}\n"
        "  Ctrl-C to stop",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    dsn = settings.database_dsn()
    conn = await connect(dsn, timeout=settings.database.connect_timeout_seconds)
    try:
        if args.check:
            problems = await check(conn)
            for problem in problems:
                print(f"missing: {problem}")
            print("schema verified" if not problems else f"{len(problems)} problem(s)")
            return 1 if problems else 0
        if args.rollback:
            name = await rollback(conn, args.rollback, lock_timeout=settings.database.lock_timeout_seconds)
            print(f"rolled back {name}")
            return 0
        names = await migrate(conn, lock_timeout=settings.database.lock_timeout_seconds)
        print("\n".join(f"applied {name}" for name in names) or "up to date: nothing to apply")
        return 0
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run cost-sync with ``argv`` (default: the process's arguments); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None and args.once:
        handler = _once
    elif handler is None and (args.instance or args.dry_run or args.json or args.full):
        parser.error("--instance, --dry-run, --json and --full go with --once")
    if handler is None:
        handler = _daemon
    try:
        settings = load_settings(getattr(args, "config", None))
        # The demo prints its own tables; its log lines would only repeat them.
        default_level = "error" if handler is _demo else "info"
        logs.configure(level=getattr(args, "log_level", default_level))
        return asyncio.run(handler(args, settings))
    except CostSyncError as exc:
        print(f"cost-sync: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cost-sync: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
