"""System programs some tests need (pgbouncer, chromium, promtool), found or skipped with the reason.

Where ``REQUIRE_SYSTEM_TOOLS`` is set (``.ci/run`` sets it after installing the Debian
packages), a missing program fails the test instead: CI always runs these tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Not COST_SYNC_*: cost-sync refuses unknown variables with its own prefix.
REQUIRE_VARIABLE = "REQUIRE_SYSTEM_TOOLS"

# Debian installs some daemons outside a user's PATH.
_EXTRA_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_program(name: str) -> str | None:
    """Absolute path of ``name`` on PATH or in the system directories, else None."""
    found = shutil.which(name)
    if found:
        return found
    for folder in _EXTRA_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def need_program(name: str, *, package: str) -> str:
    """Path of ``name``; skips the test (fails it under REQUIRE_SYSTEM_TOOLS) when absent."""
    found = find_program(name)
    if found is not None:
        return found
    reason = f"{name} is not installed (Debian package {package!r})"
    if os.environ.get(REQUIRE_VARIABLE):
        pytest.fail(f"{reason}, and {REQUIRE_VARIABLE} says this machine must have it", pytrace=False)
    pytest.skip(reason)
