"""cost-sync: keeps vps_instances.approximate_cost true from Hostwinds prices."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cost-sync")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"

__all__ = ["__version__"]
