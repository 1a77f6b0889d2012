"""``cost-sync report``: the fleet's monthly total and where it comes from (text, JSON, CSV, HTML)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cost_sync.cli import render, report_data
from cost_sync.cli.audit.common import database
from cost_sync.domain import reporting
from cost_sync.domain.redact import for_terminal
from cost_sync.errors import ConfigError
from cost_sync.settings import Settings
from cost_sync.store.trust import TrustStore


async def _report(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "html", None) is not None:
        if args.csv:
            raise ConfigError("--html writes a page; --csv prints a table: give one")
        return await _report_html(args, settings)
    if getattr(args, "since", None) is not None:
        raise ConfigError("--since goes with --html (report --json and --csv show the fleet now)")
    async with database(settings) as pool:
        data = await report_data.report_json(TrustStore(pool), settings, datetime.now(UTC))
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.csv:
        print(reporting.report_csv(data), end="")
    else:
        print(for_terminal(render.report_text(data)))
    return 0


async def _report_html(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.cli import report_html

    # Before the database is read: a missing extra is a one-line exit 2.
    report_html.require_matplotlib()
    now = datetime.now(UTC)
    since = args.since or (now - timedelta(days=report_html.DEFAULT_DAYS)).date()
    if since > now.date():
        raise ConfigError(f"--since {since.isoformat()} is in the future")
    async with database(settings) as pool:
        data = await report_data.html_data(pool, settings, since=since, now=now)
    page = report_html.render_page(data)
    path: Path = args.html
    try:
        await asyncio.to_thread(path.write_text, page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps({"outcome": "written", "path": str(path), "bytes": len(page.encode())}))
    else:
        print(f"report written to {path} ({len(page.encode()) // 1024} KiB; open it in a browser)")
    return 0
