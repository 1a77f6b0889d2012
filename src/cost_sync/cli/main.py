"""The ``cost-sync`` command: parses arguments, loads settings, configures logging, runs one verb.

Exit codes: 0 done; 1 the work failed (nothing was written); 2 bad configuration or usage.

Each verb is one ``_verb_*`` function that registers its parser and names its handler; adding a
verb is adding such a function to :data:`VERBS`. Handlers import what they need when they run, so
``cost-sync --help`` loads no database, HTTP or scheduling library. Every failure is printed once:
one ``cost-sync: error: ...`` line on stderr and, with ``--json``, one object on stdout::

    {"outcome": "failed", "error": "...", "exit_code": 1}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cost_sync.domain.redact import for_terminal

if TYPE_CHECKING:
    from cost_sync.run.sync import RunResult
    from cost_sync.settings import Settings

Handler = Callable[[argparse.Namespace, "Settings"], Coroutine[Any, Any, int]]

#: Exit code of a usage error or a bad setting (as ConfigError's).
USAGE = 2


class UsageError(Exception):
    """A command line argparse refused; carries the parser whose usage applies."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors reach :func:`main`, so ``--json`` can report them too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


class _Version(argparse.Action):
    """``--version``, reading the installed version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **_: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> NoReturn:
        from cost_sync import __version__

        print(f"cost-sync {__version__}")
        parser.exit()


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _port(text: str) -> int:
    value = _non_negative(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)  # float-ok: a duration
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 seconds")
    return value


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the verb is not reset by the verb's own parser.
    common = CliParser(add_help=False)
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
        help="log verbosity on stderr (default: $COST_SYNC_LOG_LEVEL, else info)",
    )
    return common


def _json_option(parser: argparse._ActionsContainer, what: str) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"print {what} as JSON on stdout; a failure as one "
        '{"outcome": "failed", "error": ..., "exit_code": ...} object',
    )


def _sync_options(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--once", action="store_true", default=argparse.SUPPRESS, help="run one sync now and exit"
    )
    group.add_argument(
        "--instance",
        action="append",
        metavar="ID",
        default=argparse.SUPPRESS,
        help="limit the run to this row (repeatable): a hostwinds_instance_id, a Hostwinds serviceid "
        "or server_uuid, or the row's id",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        default=argparse.SUPPRESS,
        help="compute everything, write nothing; print each change and the fleet's total before and after",
    )
    _json_option(group, "the run report")
    group.add_argument(
        "--full",
        action="store_true",
        default=argparse.SUPPRESS,
        help="ask Hostwinds every instance's price afresh instead of using cached prices",
    )
    group.add_argument(
        "--accept-changes",
        action="store_true",
        default=argparse.SUPPRESS,
        help="apply every change, also those over [guard] max_change_ratio, and skip the "
        "vanished-rows check ([guard] max_unmatched_ratio)",
    )


def _daemon_options(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--no-initial-sync",
        action="store_true",
        default=argparse.SUPPRESS,
        help="daemon: wait for the schedule instead of syncing at start-up",
    )


# -- verbs: one function each, registering its parser and its handler ------------------------------


def _verb_run(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "run",
        parents=[common],
        help="run the daemon (the default), or one sync with --once",
        description="Run the daemon until SIGTERM or SIGINT: scheduled syncs and the admin endpoint. "
        "With --once, run one sync now and exit.",
    )
    _sync_options(p.add_argument_group("one-shot sync"))
    _daemon_options(p)
    p.set_defaults(handler=_run)


def _verb_resync(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "resync",
        parents=[common],
        help="price the named instances now, e.g. after a plan upgrade",
        description="Sync the named instances now: through the daemon when COST_SYNC_ADMIN_URL is set "
        "(waiting for the outcome), else in this process. Serialised with every other run.",
    )
    targets = p.add_mutually_exclusive_group(required=True)
    targets.add_argument(
        "--instance",
        action="append",
        metavar="ID",
        help="a row to sync (repeatable): hostwinds_instance_id, Hostwinds serviceid or server_uuid, "
        "or row id",
    )
    targets.add_argument("--all", action="store_true", help="the whole fleet instead")
    p.add_argument(
        "--full",
        action="store_true",
        help="with --all: ask Hostwinds every instance's price afresh (named instances always are)",
    )
    p.add_argument(
        "--accept-changes",
        action="store_true",
        help="with --all: apply changes over [guard] max_change_ratio instead of holding them "
        "(named instances always apply)",
    )
    _json_option(p, "the run report")
    p.add_argument(
        "--wait",
        type=_positive_seconds,
        default=900.0,
        metavar="SECONDS",
        help="how long to wait for the daemon's run to finish (default: 900)",
    )
    p.set_defaults(handler=_resync)


def _verb_demo(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "demo",
        parents=[common],
        help="run the whole job on embedded PostgreSQL and a SANDBOX Hostwinds; no key, no server",
        description="Start an embedded PostgreSQL and the SANDBOX Hostwinds API (made-up prices), "
        "seed a sample fleet, sync twice, print what was priced and how. Cleans up on exit. "
        "Needs the demo extra: pip install 'cost-sync[demo]'.",
    )
    p.add_argument("--keep", action="store_true", help="leave the database and sandbox running until Ctrl-C")
    p.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        default=Path("cost-sync-demo-report.html"),
        help="where to write the demo's HTML report (default: cost-sync-demo-report.html)",
    )
    _json_option(p, "both runs' reports")
    p.set_defaults(handler=_demo, default_log_level="error")


def _verb_sandbox(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "sandbox",
        parents=[common],
        help="serve a SANDBOX Hostwinds API (made-up data) on 127.0.0.1 for tests and trials",
        description="Serve a SANDBOX Hostwinds Cloud API from a fleet file (default: the demo fleet) "
        "until Ctrl-C. Point cost-sync at it with COST_SYNC_HOSTWINDS_URL and its API key.",
    )
    fleet = p.add_mutually_exclusive_group()
    fleet.add_argument(
        "--fleet", type=Path, metavar="FILE", help="fleet file, .toml or .json (docs/sandbox.md)"
    )
    fleet.add_argument(
        "--generate", type=_non_negative, metavar="N", help="a generated fleet of N instances instead"
    )
    fleet.add_argument(
        "--replay",
        type=Path,
        metavar="DIR",
        help="serve the answers `cost-sync doctor --capture DIR` saved, exactly, instead of a fleet",
    )
    p.add_argument(
        "--price-list-shape",
        choices=["flat", "openapi"],
        help="serve get_price_list as the fleet writes it (flat) or as the OpenAPI description shapes "
        "it: keyed by resource id, promo/cycles/firsts objects, one custom plan priced in `pricing`",
    )
    p.add_argument(
        "--error-form",
        choices=["list", "object"],
        help="error envelopes as a list at HTTP 200 (default) or an object at HTTP 400/401",
    )
    p.add_argument("--api-key", metavar="KEY", help="with --replay: accept only this key (default: any key)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port to listen on (default: 8080; 0: any)")
    _json_option(p, "where it listens (one line, once it accepts connections)")
    p.set_defaults(handler=_sandbox)


def _verb_migrate(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "migrate",
        parents=[common],
        help="apply the SQL migrations in sql/ (each once, recorded with a checksum)",
        description="Apply pending migrations, or check or roll them back.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 0 when every migration is applied and verifies, else 1",
    )
    mode.add_argument(
        "--rollback",
        metavar="VERSION",
        help="run the newest applied migration's rollback file (e.g. 0008) and forget it in the ledger; "
        "says what it drops with row counts and asks first",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="with --rollback: drop without asking (needed when there is no terminal to ask on)",
    )
    _json_option(p, "what was applied, checked or rolled back")
    p.set_defaults(handler=_migrate)


def _verb_doctor(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "doctor",
        parents=[common],
        help="check settings, database and the Hostwinds account read-only; say what to fix",
        description="Read-only checks, in order, each pass/warn/fail with its evidence and the fix "
        "(docs/first-run.md). Exit 0 when nothing fails, else 1. Writes nothing to the database.",
    )
    _json_option(p, "the checks")
    p.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="also ask every read-only answer a full sync needs and save them (secrets removed) in DIR, "
        "for `cost-sync sandbox --replay DIR`",
    )
    # plain: doctor loads the settings itself, so a bad setting is its first failed check.
    p.set_defaults(handler=None, plain=_doctor, default_log_level="warning")


def _verb_attribution(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "attribution",
        parents=[common],
        help="each tenant's share of the fleet's monthly cost, to the cent, and the unallocated rest",
        description="Split each VPS's approximate_cost over its SMTP IPs and each IP's share over the "
        "tenants assigned to it (docs/attribution.md). Reads only, unless --write.",
    )
    output = p.add_mutually_exclusive_group()
    _json_option(output, "the attribution (amounts as strings)")
    output.add_argument("--csv", action="store_true", help="print CSV")
    p.add_argument(
        "--by", choices=["tenant", "vps"], default="tenant", help="one line per tenant (default) or per VPS"
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="also replace the cost_sync_tenant_costs snapshot that the cost_sync_tenant_monthly view reads "
        "(and today's row per tenant in cost_sync_tenant_daily)",
    )
    p.set_defaults(handler=_attribution)


def _verb_explain(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "explain",
        parents=[common],
        help="why one row costs what it does: its derivation, history and what a run would compute now",
        description="Show a row's value, the derivation of its last change, its whole history (newest "
        "first) and, if it differs, what a run would compute now from cached prices. Database only.",
    )
    p.add_argument(
        "id",
        metavar="ID",
        help="as --instance takes it: hostwinds_instance_id, serviceid, server_uuid or row id",
    )
    _json_option(p, "the explanation")
    p.set_defaults(handler=_trust)


def _verb_held(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "held",
        parents=[common],
        help="list changes held for approval ([guard] max_change_ratio)",
        description="List held changes: row, old, proposed, ratio, reason, since. Database only.",
    )
    _json_option(p, "the held changes")
    p.set_defaults(handler=_trust)


def _verb_approve(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "approve",
        parents=[common],
        help="apply held changes after re-checking each against current prices",
        description="Re-check each held change against what a run would compute now (cached prices, "
        "read-only at Hostwinds) and apply those that still stand in one transaction, recorded in "
        "history as approved. A stale one is refused with the reason (exit 1).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--instance", action="append", metavar="ID", help="a held row (repeatable)")
    which.add_argument("--all", action="store_true", help="every held change")
    p.add_argument("--dry-run", action="store_true", help="re-check and show, apply nothing")
    _json_option(p, "what was approved and refused")
    p.set_defaults(handler=_trust)


def _verb_report(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "report",
        parents=[common],
        help="the fleet's monthly totals, unpriced rows, held changes and drift, from the database",
        description="Totals by status, plan, cycle, price source and region; unpriced rows with reasons; "
        "held changes; drift against monthly_cost; the oldest price observation; instances with an "
        "upgrade available. Database only.",
    )
    output = p.add_mutually_exclusive_group()
    _json_option(output, "the report (amounts as strings); with --html, where the page was written")
    output.add_argument("--csv", action="store_true", help="print CSV")
    p.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        help="write the report as one self-contained HTML page with charts (docs/report.md); "
        "needs the report extra: pip install 'cost-sync[report]'",
    )
    p.add_argument(
        "--since",
        type=_date,
        metavar="DATE",
        help="with --html: the first day the charts show, YYYY-MM-DD (default: 90 days ago)",
    )
    p.set_defaults(handler=_trust)


def _verb_quote(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "quote",
        parents=[common],
        help="what an instance would cost a month on another plan or cycle",
        description="Price an instance on another plan (and cycle) from the price list with the same rules "
        "a run uses, next to its current value. Read-only at Hostwinds; writes nothing.",
    )
    p.add_argument("--instance", required=True, metavar="ID", help="the row, as --instance takes it")
    p.add_argument(
        "--plan", required=True, type=_non_negative, metavar="PLAN_ID", help="the price-list plan id"
    )
    p.add_argument("--cycle", metavar="CYCLE", help="the billing cycle (default: the instance's own)")
    _json_option(p, "the quote")
    p.set_defaults(handler=_trust)


def _verb_completion(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for cost-sync. bash: "
        "`cost-sync completion bash > ~/.local/share/bash-completion/completions/cost-sync`; "
        'zsh: `cost-sync completion zsh > "${fpath[1]}/_cost-sync"`.',
    )
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(handler=None, plain=_completion)


#: Every verb, in the order ``--help`` lists them.
VERBS: list[Callable[[Any, argparse.ArgumentParser], None]] = [
    _verb_run,
    _verb_resync,
    _verb_migrate,
    _verb_demo,
    _verb_sandbox,
    _verb_doctor,
    _verb_attribution,
    _verb_explain,
    _verb_held,
    _verb_approve,
    _verb_report,
    _verb_quote,
    _verb_completion,
]


def build_parser() -> CliParser:
    """The argument parser, verbs included."""
    common = _common()
    parser = CliParser(
        prog="cost-sync",
        parents=[common],
        description="Keep vps_instances.approximate_cost true from Hostwinds prices.",
        epilog="Without a verb cost-sync runs the daemon; `cost-sync --once` is `cost-sync run --once`.",
    )
    parser.add_argument("--version", action=_Version)
    _sync_options(parser.add_argument_group("one-shot sync (the same as `run --once ...`)"))
    _daemon_options(parser)
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    for verb in VERBS:
        verb(verbs, common)
    return parser


# -- handlers -------------------------------------------------------------------------------------


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
    from cost_sync.cli import progress
    from cost_sync.run.request import RunRequest
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
        result = await run_once(
            client=client,
            pool=pool,
            settings=settings,
            request=RunRequest(
                trigger="once",
                targets=getattr(args, "instance", None),
                dry_run=getattr(args, "dry_run", False),
                full=getattr(args, "full", False),
                accept_changes=getattr(args, "accept_changes", False),
            ),
            progress=bar,
        )
    print_result(result, as_json=args.json)
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
            await require_schema(pool)
            result = await run_once(
                client=client,
                pool=pool,
                settings=settings,
                request=request,
                progress=bar,
            )
        print_result(result, as_json=args.json)
        return _committed(result)
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
    from cost_sync.runtime.signals import stop_on_signals

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
    async with stop_on_signals() as stop:
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(exc.strerror or str(exc)) from None
        try:
            if args.json:
                listening: dict[str, Any] = {"outcome": "listening", "url": server.url}
                listening |= {
                    "api_key": fleet.api_key,
                    "instances": len(fleet.instances),
                    "plans": len(fleet.plans),
                }
                print(json.dumps(listening), flush=True)
            else:
                print(
                    f"SANDBOX Hostwinds API (made-up data, not Hostwinds) listening on {server.url}\n"
                    f"  {len(fleet.instances)} instances, {len(fleet.plans)} price-list rows\n"
                    f"  COST_SYNC_HOSTWINDS_URL={server.url} COST_SYNC_HOSTWINDS_API_KEY={fleet.api_key}\n"
                    "  Ctrl-C to stop",
                    flush=True,
                )
            await stop.wait()
        finally:
            await server.stop()
    return 0


async def _replay(args: argparse.Namespace) -> int:
    from cost_sync.errors import ConfigError
    from cost_sync.hostwinds.capture import CaptureError, ReplayServer, load_capture
    from cost_sync.runtime.signals import stop_on_signals

    try:
        capture = load_capture(args.replay)
    except CaptureError as exc:
        raise ConfigError(str(exc)) from None
    server = ReplayServer(capture, api_key=args.api_key, host=args.host, port=args.port)
    async with stop_on_signals() as stop:
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(exc.strerror or str(exc)) from None
        try:
            if args.json:
                listening = {"outcome": "listening", "url": server.url, "answers": len(capture.bodies)}
                print(json.dumps(listening), flush=True)
            else:
                key = "only the key given with --api-key" if args.api_key else "any API key"
                print(
                    f"REPLAY of {args.replay} (captured answers, not Hostwinds) listening on {server.url}\n"
                    f"  {len(capture.bodies)} answers; accepts {key}\n"
                    f"  COST_SYNC_HOSTWINDS_URL={server.url}\n"
                    "  Ctrl-C to stop",
                    flush=True,
                )
            await stop.wait()
        finally:
            await server.stop()
    return 0


def _doctor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import asyncio

    from cost_sync.cli.doctor import run_doctor

    as_json = getattr(args, "json", False)
    _configure_logs(args, None)
    try:
        report = asyncio.run(run_doctor(getattr(args, "config", None), capture_dir=args.capture))
    except KeyboardInterrupt:
        return _fail("interrupted", 130, as_json=as_json)
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
    from cost_sync.cli import trust as trust_cli

    return await trust_cli.HANDLERS[args.command](args, settings)


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


# -- the one boundary where failures become an exit code and one message ---------------------------


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


def _fail(message: str, exit_code: int, *, as_json: bool) -> int:
    print(f"cost-sync: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"outcome": "failed", "error": message, "exit_code": exit_code}))
    return exit_code


def _configure_logs(args: argparse.Namespace, settings: Settings | None) -> None:
    from cost_sync.runtime import logs

    level: str | None = getattr(args, "log_level", None)
    fmt = None
    if settings is not None:
        fmt = settings.log.format
        if level is None and "level" in settings.log.model_fields_set:
            level = settings.log.level
    logs.configure(
        level=level or str(getattr(args, "default_log_level", "info")),
        json_logs=None if fmt is None else fmt == "json",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run cost-sync with ``argv`` (default: the process's arguments); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        plain = getattr(args, "plain", None)
        if plain is not None:
            return int(plain(args, parser))
        handler: Handler = getattr(args, "handler", None) or _run
        if handler is _run and not getattr(args, "once", False):
            given = [
                name
                for name in ("instance", "dry_run", "json", "full", "accept_changes")
                if hasattr(args, name)
            ]
            if given:
                raise UsageError(
                    parser, "--instance, --dry-run, --json, --full and --accept-changes go with --once"
                )
        args.json = getattr(args, "json", False)
        return _execute(handler, args, as_json=as_json)
    except UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc}", file=sys.stderr)
        if as_json:
            print(json.dumps({"outcome": "failed", "error": str(exc), "exit_code": USAGE}))
        raise SystemExit(USAGE) from None


def _execute(handler: Handler, args: argparse.Namespace, *, as_json: bool) -> int:
    import asyncio

    from cost_sync.errors import CostSyncError
    from cost_sync.settings import load_settings

    settings = None
    try:
        try:
            settings = load_settings(getattr(args, "config", None))
        finally:
            # Logging is configured even when the settings are bad, from what could be read.
            _configure_logs(args, settings)
        assert settings is not None
        return asyncio.run(handler(args, settings))
    except CostSyncError as exc:
        return _fail(exc.message, exc.exit_code, as_json=as_json)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
