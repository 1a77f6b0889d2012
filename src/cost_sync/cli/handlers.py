"""The handlers of the ``cost-sync`` verbs: each runs one verb with the parsed arguments and the
settings and returns its exit code. Each imports what it needs when it runs, so ``cost-sync
--help`` loads no database, HTTP or scheduling library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from cost_sync.domain.redact import for_terminal

if TYPE_CHECKING:
    from cost_sync.run.request import RunRequest
    from cost_sync.run.sync import RunResult
    from cost_sync.settings import Settings

Handler = Callable[[argparse.Namespace, "Settings"], Coroutine[Any, Any, int]]


def print_result(result: RunResult, *, as_json: bool) -> None:
    """Show a finished run: JSON for scripts, else a summary, the changes (dry run), unpriced rows."""
    from cost_sync.cli import render

    if as_json:
        print(render.as_json(result.report, result.outcomes, result.held))
        return
    lines = render.summary(result.report)
    if result.report.dry_run:
        lines += render.changes(result.outcomes, result.held)
    lines += render.held_changes(result.held)
    lines += render.unpriced_rows(result.outcomes)
    print(for_terminal(lines))


def _committed(result: RunResult) -> int:
    """0 for a run that committed, unless the attribution snapshot after it failed: then its error;
    1 when it priced too little to trust (``mostly_unpriced``, ``nothing_matched``): what it
    priced is written, and the warning says what to fix."""
    from cost_sync.domain.flags import FAILING_KINDS

    if result.attribution_error is not None:
        raise result.attribution_error
    failing = [
        w
        for w, k in zip(result.report.warnings, result.report.warning_kinds, strict=False)
        if k in FAILING_KINDS
    ]
    for warning in failing:
        print(f"cost-sync: {warning}", file=sys.stderr)
    return 1 if failing else 0


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "once", False):
        return await _once(args, settings)
    return await _daemon(args, settings)


async def _once(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.run.request import RunRequest

    request = RunRequest(
        trigger="once",
        targets=getattr(args, "instance", None),
        dry_run=getattr(args, "dry_run", False),
        full=getattr(args, "full", False),
        accept_changes=getattr(args, "accept_changes", False),
    )
    return await _run_here(request, settings, as_json=args.json)


async def _run_here(request: RunRequest, settings: Settings, *, as_json: bool) -> int:
    """Run ``request`` in this process (a bar on a terminal), print its result, return the exit code."""
    from cost_sync.cli import progress
    from cost_sync.run.sync import run_once
    from cost_sync.runtime.signals import sigterm_cancels_run
    from cost_sync.store.migrate import require_schema
    from cost_sync.wiring import open_resources

    settings.require("hostwinds.api_key", "database.url")
    async with (
        sigterm_cancels_run(),
        open_resources(settings) as (client, pool),
        progress.terminal_bar() as bar,
    ):
        # Before the first Hostwinds call: a missing migration is exit 2, "run `cost-sync migrate`".
        await require_schema(pool)
        result = await run_once(client=client, pool=pool, settings=settings, request=request, progress=bar)
    print_result(result, as_json=as_json)
    return _committed(result)


async def _daemon(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.daemon.service import Daemon
    from cost_sync.runtime.signals import stop_on_signals
    from cost_sync.wiring import open_resources

    settings.require("hostwinds.api_key", "database.url")
    async with stop_on_signals() as stop, open_resources(settings) as (client, pool):
        await Daemon(settings, client, pool).serve(
            stop, initial_sync=not getattr(args, "no_initial_sync", False)
        )
    return 0


async def _resync(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.run.request import RunRequest

    targets = None if args.all else args.instance
    request = RunRequest.resync(targets, full=args.full, accept_changes=args.accept_changes)
    if settings.admin.url is None:
        return await _run_here(request, settings, as_json=args.json)
    from cost_sync.cli import admin_client as admin

    settings.require("admin.token")
    record = await admin.resync(
        settings, targets, wait=args.wait, full=request.full, accept_changes=request.accept_changes
    )
    return admin.show(record, as_json=args.json)


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.cli.demo import run_demo

    return await run_demo(keep=args.keep, as_json=args.json, html=args.html)


async def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.errors import ConfigError
    from cost_sync.hostwinds import sandbox

    if args.replay is not None:
        if args.price_list_shape is not None or args.error_form is not None:
            raise ConfigError("--price-list-shape and --error-form go with a fleet, not --replay")
        return await _replay(args)
    if args.api_key is not None:
        raise ConfigError("--api-key goes with --replay")
    if args.generate is not None:
        fleet = sandbox.generate_fleet(args.generate)
    else:
        fleet = sandbox.load_fleet(args.fleet or sandbox.DEMO_FLEET_PATH)
    import dataclasses

    shape = {"price_list_shape": args.price_list_shape, "error_form": args.error_form}
    fleet = dataclasses.replace(fleet, **{k: v for k, v in shape.items() if v is not None})
    server = sandbox.SandboxServer(fleet, host=args.host, port=args.port)

    def listening(url: str) -> str:
        if args.json:
            return json.dumps(
                {
                    "outcome": "listening",
                    "url": url,
                    "api_key": fleet.api_key,
                    "instances": len(fleet.instances),
                    "plans": len(fleet.plans),
                }
            )
        return (
            f"SANDBOX Hostwinds API (made-up data, not Hostwinds) listening on {url}\n"
            f"  {len(fleet.instances)} instances, {len(fleet.plans)} price-list rows\n"
            f"  COST_SYNC_HOSTWINDS_URL={url} COST_SYNC_HOSTWINDS_API_KEY={fleet.api_key}\n"
            "  Ctrl-C to stop"
        )

    return await _serve_until_stopped(server, listening)


async def _replay(args: argparse.Namespace) -> int:
    from cost_sync.errors import ConfigError
    from cost_sync.hostwinds.capture import CaptureError, ReplayServer, load_capture

    try:
        capture = load_capture(args.replay)
    except CaptureError as exc:
        raise ConfigError(str(exc)) from None
    server = ReplayServer(capture, api_key=args.api_key, host=args.host, port=args.port)

    def listening(url: str) -> str:
        if args.json:
            return json.dumps({"outcome": "listening", "url": url, "answers": len(capture.bodies)})
        key = "only the key given with --api-key" if args.api_key else "any API key"
        return (
            f"REPLAY of {args.replay} (captured answers, not Hostwinds) listening on {url}\n"
            f"  {len(capture.bodies)} answers; accepts {key}\n"
            f"  COST_SYNC_HOSTWINDS_URL={url}\n"
            "  Ctrl-C to stop"
        )

    return await _serve_until_stopped(server, listening)


class _Served(Protocol):
    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def _serve_until_stopped(server: _Served, listening: Callable[[str], str]) -> int:
    """Start ``server``, print ``listening(url)`` (a JSON line or the banner), serve until SIGINT or
    SIGTERM, stop; a port that cannot be bound is a ConfigError (exit 2) with the reason."""
    from cost_sync.errors import ConfigError
    from cost_sync.runtime.signals import stop_on_signals

    async with stop_on_signals() as stop:
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(exc.strerror or str(exc)) from None
        try:
            print(listening(server.url), flush=True)
            await stop.wait()
        finally:
            await server.stop()
    return 0


def _doctor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import asyncio

    from cost_sync.cli.doctor import run_doctor
    from cost_sync.cli.main import configure_logs, fail

    as_json = getattr(args, "json", False)
    configure_logs(args, None)
    try:
        report = asyncio.run(run_doctor(getattr(args, "config", None), capture_dir=args.capture))
    except KeyboardInterrupt:
        return fail("interrupted", 130, as_json=as_json)
    print(json.dumps(report.as_json(), indent=2) if as_json else for_terminal(report.lines()))
    return 0 if report.ok else 1


async def _attribution(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.cli import attribution_render
    from cost_sync.store import attribution as attribution_store
    from cost_sync.store.db import create_pool
    from cost_sync.store.migrate import require_platform_table

    pool = await create_pool(
        settings.database_dsn(),
        timeout=settings.database.connect_timeout_seconds,
        max_size=2,
        statement_cache_size=settings.database.statement_cache_size,
    )
    try:
        async with pool.acquire() as conn:
            await require_platform_table(conn)
        report = await attribution_store.compute(pool, settings, snapshot=args.write)
        if args.write:
            await attribution_store.store_snapshot(pool, report, keep_days=settings.attribution.keep_days)
    finally:
        await pool.close()
    if args.json:
        print(attribution_render.as_json(report, args.by))
    elif args.csv:
        print(attribution_render.as_csv(report, args.by), end="")
    else:
        lines = attribution_render.text(report, args.by)
        if args.write:
            lines.append("snapshot written to cost_sync_tenant_costs (view cost_sync_tenant_monthly)")
        print(for_terminal(lines))
    return 0


async def _trust(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.cli import audit

    return await audit.HANDLERS[args.command](args, settings)


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from cost_sync.errors import ConfigError
    from cost_sync.store.db import connect
    from cost_sync.store.migrate import check, migrate, require_platform_table, rollback, rollback_plan

    dsn = settings.database_dsn()
    lock_timeout = settings.database.lock_timeout_seconds
    conn = await connect(
        dsn,
        timeout=settings.database.connect_timeout_seconds,
        statement_cache_size=settings.database.statement_cache_size,
    )
    try:
        if not args.rollback:
            await require_platform_table(conn)
        if args.check:
            problems = await check(conn)
            if args.json:
                print(json.dumps({"outcome": "failed" if problems else "verified", "problems": problems}))
            else:
                for problem in problems:
                    print(f"missing: {problem}")
                print("schema verified" if not problems else f"{len(problems)} problem(s)")
            return 1 if problems else 0
        if args.rollback:
            plan = await rollback_plan(conn, args.rollback)
            dropped = [d.describe() for d in plan.drops]
            if not args.json or not args.yes:
                print(
                    f"rolling back {plan.name} drops: " + ("; ".join(dropped) or "nothing"), file=sys.stderr
                )
            if not args.yes:
                if not sys.stdin.isatty():
                    raise ConfigError(
                        f"migrate --rollback drops what is listed above ({plan.name}); "
                        "there is no terminal to ask on: pass --yes to confirm"
                    )
                answer = await asyncio.to_thread(input, f"type yes to roll back {plan.name}: ")
                if answer.strip().lower() != "yes":
                    print("not rolled back", file=sys.stderr)
                    return 1
            name = await rollback(conn, args.rollback, lock_timeout=lock_timeout)
            print(
                json.dumps({"outcome": "rolled_back", "migration": name, "dropped": dropped})
                if args.json
                else f"rolled back {name}"
            )
            return 0
        names = await migrate(conn, lock_timeout=lock_timeout)
        if args.json:
            print(json.dumps({"outcome": "applied" if names else "up_to_date", "applied": names}))
        else:
            print("\n".join(f"applied {name}" for name in names) or "up to date: nothing to apply")
        return 0
    finally:
        await conn.close()


def _completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import shtab

    print(shtab.complete(parser, shell=args.shell))
    return 0
