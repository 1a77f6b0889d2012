"""The ``cost-sync`` command: parses arguments, loads settings, configures logging, runs one verb.

Exit codes: 0 done; 1 the work failed (nothing was written); 2 bad configuration or usage.

The verbs are registered in :mod:`cost_sync.cli.parsers` and run by
:mod:`cost_sync.cli.handlers`. Handlers import what they need when they run, so
``cost-sync --help`` loads no database, HTTP or scheduling library. Every failure is printed once:
one ``cost-sync: error: ...`` line on stderr and, with ``--json``, one object on stdout::

    {"outcome": "failed", "error": "...", "exit_code": 1}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cost_sync.settings import Settings

from cost_sync.cli.handlers import Handler, _run
from cost_sync.cli.parsers import USAGE, VERBS, UsageError, build_parser

__all__ = ["VERBS", "build_parser", "main"]


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


def fail(message: str, exit_code: int, *, as_json: bool) -> int:
    print(f"cost-sync: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"outcome": "failed", "error": message, "exit_code": exit_code}))
    return exit_code


def configure_logs(args: argparse.Namespace, settings: Settings | None) -> None:
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
            configure_logs(args, settings)
        assert settings is not None
        return asyncio.run(handler(args, settings))
    except CostSyncError as exc:
        return fail(exc.message, exc.exit_code, as_json=as_json)
    except KeyboardInterrupt:
        return fail("interrupted", 130, as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
