"""cost-sync: keeps vps_instances.approximate_cost true from Hostwinds prices."""

from __future__ import annotations

__all__ = ["__version__"]

__version__: str


def __getattr__(name: str) -> str:
    # Read on first use: importlib.metadata costs more than the rest of `cost-sync --help`.
    if name != "__version__":
        raise AttributeError(f"module 'cost_sync' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("cost-sync")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        value = "0.0.0"
    globals()["__version__"] = value
    return value
