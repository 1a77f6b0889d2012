"""The SQL files ship inside the wheel, so an installed cost-sync can migrate without a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_every_sql_file(tmp_path: Path) -> None:
    """Every file under sql/ is in the wheel under cost_sync/sql/, with the same bytes."""
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
            packaged = f"cost_sync/sql/{path.relative_to(ROOT / 'sql').as_posix()}"
            assert packaged in names, packaged
            assert archive.read(packaged) == path.read_bytes()
