"""The ``cost-sync`` argument parser: one ``_verb_*`` function per verb registers its parser
and names its handler (in :mod:`cost_sync.cli.handlers`); adding a verb is adding such a
function to :data:`VERBS`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    pass

from cost_sync.cli.handlers import (
    _attribution,
    _completion,
    _demo,
    _doctor,
    _migrate,
    _resync,
    _run,
    _sandbox,
    _trust,
)

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
