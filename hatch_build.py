"""Build hook: records the git revision the wheel was built from in its metadata.

The revision is the ``GIT_REVISION`` environment variable when set (the Dockerfile's build
argument: the image's build context has no .git), else ``git rev-parse HEAD`` of the source tree,
else ``unknown``. It lands in ``cost_sync-<version>.dist-info/extra_metadata/REVISION``, where
``cost_sync.build_revision()`` reads it for ``cost_sync_build_info{revision}``. An editable
install records the revision it was installed at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: A commit id (abbreviated or full, SHA-1 or SHA-256), optionally marked as built from a dirty tree.
REVISION = re.compile(r"[0-9a-f]{7,64}(-dirty)?")


def git_revision(root: str) -> str | None:
    """HEAD of the git work tree at ``root``, or None (no git, not a work tree)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command, no shell
            [git, "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    head = done.stdout.strip()
    return head if done.returncode == 0 and REVISION.fullmatch(head) else None


def source_revision(root: str) -> str:
    """The revision to record: GIT_REVISION, else the work tree's HEAD, else "unknown"."""
    given = os.environ.get("GIT_REVISION", "").strip().lower()
    if given and given != "unknown":
        if not REVISION.fullmatch(given):
            raise ValueError(f"GIT_REVISION must be a git commit id (hex), not {given!r}")
        return given
    return git_revision(root) or "unknown"


class RevisionHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds extra_metadata/REVISION to every wheel, editable ones included."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        self._dir = tempfile.mkdtemp(prefix="cost-sync-revision-")
        path = Path(self._dir) / "REVISION"
        path.write_text(source_revision(self.root) + "\n")
        build_data.setdefault("extra_metadata", {})[str(path)] = "REVISION"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        directory = getattr(self, "_dir", None)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
