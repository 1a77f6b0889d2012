"""The git revision in the wheel's metadata: from GIT_REVISION (the image build) or the work tree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

from cost_sync import build_revision

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(tmp_path: Path, env: dict[str, str]) -> str:
    """Build the wheel with the project's own build hook; the REVISION it recorded."""
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("cost_sync-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/extra_metadata/REVISION")]
        return archive.read(name).decode()


def test_build_argument_is_recorded_in_the_wheel(tmp_path: Path) -> None:
    """GIT_REVISION (the Dockerfile's build argument) wins, as it is, with a newline."""
    assert build_wheel(tmp_path, {"GIT_REVISION": "0123abcd4567ef"}) == "0123abcd4567ef\n"


def test_a_bad_build_argument_fails_the_build(tmp_path: Path) -> None:
    """A GIT_REVISION that is not a commit id stops the build instead of labelling the image wrong."""
    with pytest.raises(subprocess.CalledProcessError) as caught:
        build_wheel(tmp_path, {"GIT_REVISION": "main; rm -rf /"})
    assert b"GIT_REVISION must be a git commit id" in caught.value.stderr


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not built from a git work tree"
)
def test_without_the_argument_the_work_tree_head_is_recorded(tmp_path: Path) -> None:
    """From a checkout, the wheel records `git rev-parse HEAD`."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert build_wheel(tmp_path, {}) == head + "\n"


def test_the_installed_revision_is_read_from_the_metadata() -> None:
    """build_revision() is the installed distribution's REVISION, a commit id or "unknown"."""
    recorded = distribution("cost-sync").read_text("extra_metadata/REVISION")
    assert recorded is not None, "the installed cost-sync was built without the revision hook"
    assert build_revision() == recorded.strip()
    assert re.fullmatch(r"unknown|[0-9a-f]{7,64}(-dirty)?", build_revision())
