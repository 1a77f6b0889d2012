"""Where cost-sync's SQL lives: package data of :mod:`cost_sync.store` (``sql/`` at the top of a
checkout is a link to it)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["sql_dir"]


def sql_dir() -> Path:
    """The folder holding cost-sync's SQL, the same in a checkout, an editable install and a wheel."""
    return Path(str(resources.files("cost_sync.store"))) / "sql"
