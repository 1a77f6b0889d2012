"""CLI start-up: ``cost-sync --help`` against a bare ``python -c pass``, both measured in this run.

The target is an answer in under 0.3 s, so ``--help`` must load no database, HTTP or scheduling
library. Machines differ, so the figure that matters is the ratio to the interpreter's own start-up
measured beside it; the absolute medians are printed too. Run it with the environment's Python::

    .venv/bin/python bench/cli_startup.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: The start-up target of `cost-sync --help`, in seconds.
TARGET_SECONDS = 0.3


def timed(command: list[str], repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` runs of ``command`` (after one untimed warm-up run)."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)  # float-ok: a duration
    return times


def main() -> None:
    """Measure both commands alternately enough times and print medians and the ratio as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    script = str(Path(sys.executable).with_name("cost-sync"))
    baseline = statistics.median(timed([sys.executable, "-c", "pass"], args.repeat))
    help_ = statistics.median(timed([script, "--help"], args.repeat))
    version = statistics.median(timed([script, "--version"], args.repeat))
    print(
        json.dumps(
            {
                "python_c_pass_seconds": round(baseline, 4),
                "cost_sync_help_seconds": round(help_, 4),
                "cost_sync_version_seconds": round(version, 4),
                "help_over_baseline": round(help_ / baseline, 2),
                "help_within_target": help_ < TARGET_SECONDS,
                "repeat": args.repeat,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
