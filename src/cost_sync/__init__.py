"""cost-sync: keeps vps_instances.approximate_cost true from Hostwinds prices."""

from __future__ import annotations

__all__ = ["__version__", "build_revision"]

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


def build_revision() -> str:
    """The git revision this installation was built from (see hatch_build.py), or "unknown"."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        text = distribution("cost-sync").read_text("extra_metadata/REVISION")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"
    revision = (text or "").strip()
    return revision or "unknown"
