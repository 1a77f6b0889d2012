"""``cost-sync explain``: how one row's value was computed, from the database alone."""

from __future__ import annotations

import argparse
import json

from cost_sync.cli import report_data
from cost_sync.cli.audit.common import database, one_row
from cost_sync.domain.redact import for_terminal
from cost_sync.errors import ConfigError
from cost_sync.settings import Settings
from cost_sync.store.trust import TrustStore


async def _explain(args: argparse.Namespace, settings: Settings) -> int:
    async with database(settings) as pool:
        trust = TrustStore(pool)
        row_id = one_row(await trust.identities(), args.id)
        try:
            data = await report_data.explain_row(trust, settings, row_id)
        except ConfigError:
            raise ConfigError(f"{args.id}: the row was deleted") from None
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(for_terminal(report_data.explain_text(data)))
    return 0
