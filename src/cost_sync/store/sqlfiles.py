"""Where cost-sync's SQL lives: inside the installed package, else the checkout's ``sql/``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["sql_dir"]


def sql_dir() -> Path:
    """The folder holding cost-sync's SQL: inside the installed package, else the checkout's."""
    packaged = Path(str(resources.files("cost_sync"))) / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "sql"
