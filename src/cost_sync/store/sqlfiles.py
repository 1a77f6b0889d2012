"""Where cost-sync's SQL lives: package data of :mod:`cost_sync.store` (``sql/`` at the top of a
checkout is a link to it), and its named queries (``sql/queries/<group>.sql``) by name."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

__all__ = ["queries", "sql_dir"]

_QUERY_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)


def sql_dir() -> Path:
    """The folder holding cost-sync's SQL, the same in a checkout, an editable install and a wheel."""
    return Path(str(resources.files("cost_sync.store"))) / "sql"


@cache
def queries(group: str = "sync") -> dict[str, str]:
    """The named queries of ``sql/queries/<group>.sql`` (``-- name: NAME`` starts each one)."""
    text = (sql_dir() / "queries" / f"{group}.sql").read_text(encoding="utf-8")
    parts = _QUERY_NAME.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
