"""The terminal progress line of ``cost-sync --once``: what it says, how often, and that it goes."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import structlog

from cost_sync.cli.progress import BAR_WIDTH, bar_line, terminal_bar
from cost_sync.run.sync import Progress
from cost_sync.runtime import logs

ERASE = "\r\x1b[2K"


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_the_line_says_count_rate_elapsed_and_eta() -> None:
    progress = Progress(to_ask=1000, asked=250, started=100.0)
    line = bar_line(progress, now=110.0)
    filled = BAR_WIDTH // 4
    assert line == (
        "cycle prices [" + "#" * filled + "-" * (BAR_WIDTH - filled) + "] 250/1000 25.0/s 0:00:10 ETA 0:00:30"
    )


def test_before_the_first_answer_there_is_no_rate_and_no_eta() -> None:
    line = bar_line(Progress(to_ask=0, asked=0, started=None), now=5.0)
    assert line == "cycle prices [" + "-" * BAR_WIDTH + "] 0 0:00:00 ETA -:--:--"


def test_a_long_run_reads_in_hours() -> None:
    progress = Progress(to_ask=10_000, asked=10, started=0.0)
    # 10 asked in 100 s: 9,990 left at 0.1/s is 99,900 s.
    assert bar_line(progress, now=100.0).endswith("0.1/s 0:01:40 ETA 27:45:00")


async def test_redraws_are_throttled_and_the_line_is_erased_at_the_end() -> None:
    now = [0.0]
    out = Tty()
    async with terminal_bar(out, clock=lambda: now[0]) as progress:
        assert progress is not None
        progress.to_ask = 3
        progress.started = 0.0
        progress.tick()  # drawn: the first
        now[0] = 0.05
        progress.tick()  # too soon: skipped
        now[0] = 0.06
        progress.tick()  # the last answer: drawn however soon
    drawn = out.getvalue().split("\r\x1b[2K")
    assert drawn[0] == ""
    assert [line.split(" [")[1].split("]")[1].split()[0] for line in drawn[1:-1]] == ["1/3", "3/3"]
    assert drawn[-1] == ""  # erased: the summary that follows stands alone


async def test_off_a_terminal_there_is_no_bar() -> None:
    out = io.StringIO()
    async with terminal_bar(out) as progress:
        assert progress is None
    assert out.getvalue() == ""


async def test_a_log_line_during_the_run_stands_on_a_line_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning logged while the bar is up (a service failing, say) erases the bar first, so the
    record is not glued to it; the next answer draws the bar again after the record."""
    out = Tty()
    monkeypatch.setattr(sys, "stderr", out)
    root = logging.getLogger()
    kept = (root.handlers[:], root.level)
    logs.configure(level="info", json_logs=True)
    try:
        async with terminal_bar(out, clock=lambda: 0.0) as progress:
            assert progress is not None
            progress.to_ask = 3
            progress.started = 0.0
            progress.tick()
            structlog.get_logger("cost_sync.sync").warning("sync.cycle_prices_unavailable", serviceid=7)
            progress.tick()  # too soon after the first draw, yet drawn: the record took its place
    finally:
        root.handlers[:], level = kept
        root.setLevel(level)
    text = out.getvalue()
    before, record, after = text.partition('{"serviceid": 7')
    assert record
    assert before.endswith(ERASE), "the bar is erased before the record is written"
    assert "1/3" in before
    record_line, _, rest = after.partition("\n")
    assert "sync.cycle_prices_unavailable" in record_line
    assert "cycle prices [" not in record_line
    assert "2/3" in rest
    assert rest.endswith(ERASE)
