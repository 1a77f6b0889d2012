"""The verbs that let a person check every number: explain, held, approve, report, quote.

Their parsers are registered in :mod:`cost_sync.cli.parsers`; :mod:`cost_sync.cli.handlers` imports
this package only when one runs. ``explain``, ``held`` and ``report`` read the database only (no
Hostwinds call); ``quote`` reads Hostwinds and the database and writes nothing; ``approve``
writes the held changes that still stand.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any

from cost_sync.cli.audit.explain import _explain
from cost_sync.cli.audit.held import _approve, _held
from cost_sync.cli.audit.quote import _quote
from cost_sync.cli.audit.report import _report
from cost_sync.settings import Settings

__all__ = ["HANDLERS"]

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

#: Verb name -> handler, for :func:`cost_sync.cli.handlers._trust`.
HANDLERS: dict[str, Handler] = {
    "explain": _explain,
    "held": _held,
    "approve": _approve,
    "report": _report,
    "quote": _quote,
}
