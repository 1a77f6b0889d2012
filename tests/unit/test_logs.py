"""Logging: JSON off a terminal, one pipeline for structlog and the libraries' stdlib loggers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from cost_sync.runtime import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put logging back as it was, whatever the test configured."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_carry_run_context_for_every_logger(capsys: pytest.CaptureFixture[str]) -> None:
    """cost-sync's and a library's log lines are both JSON and both carry the bound run_id and trigger."""
    logs.configure(level="info", json_logs=True)
    structlog.contextvars.bind_contextvars(run_id="r-1", trigger="schedule")
    structlog.get_logger("cost_sync.run.sync").info("sync.finished", updated=3)
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed by %s", "0:00:02")
    first, second = lines(capsys.readouterr().err)
    assert first["event"] == "sync.finished"
    assert first["updated"] == 3
    assert second["event"] == "Run time of job was missed by 0:00:02"
    assert second["logger"] == "apscheduler.scheduler"
    for line in (first, second):
        assert (line["run_id"], line["trigger"]) == ("r-1", "schedule")
        assert line["level"] in {"info", "warning"}
        assert str(line["timestamp"]).endswith("Z")


def test_library_chatter_below_warning_is_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    """Libraries log at warning and above; cost-sync's own info lines still show."""
    logs.configure(level="info", json_logs=True)
    logging.getLogger("httpx").info("HTTP Request: POST https://example.invalid")
    structlog.get_logger("cost_sync").info("daemon.started")
    assert [line["event"] for line in lines(capsys.readouterr().err)] == ["daemon.started"]


def test_console_format_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    """With JSON off, lines are readable key=value text rather than JSON."""
    logs.configure(level="info", json_logs=False)
    structlog.get_logger("cost_sync").info("sync.finished", updated=3)
    err = capsys.readouterr().err
    assert "sync.finished" in err
    assert "updated=3" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


@pytest.mark.parametrize("json_logs", [True, False])
def test_every_log_value_is_bounded_and_one_line(json_logs: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """A 10 MiB value from anywhere is cut to LOG_VALUE_MAX; on a console, escapes are shown escaped."""
    logs.configure(level="info", json_logs=json_logs)
    structlog.get_logger("cost_sync.run.sync").warning(
        "sync.plan_name_disagrees", product_name="x" * (10 * 1024 * 1024), names=["\x1b[2J" + "y" * 5000]
    )
    err = capsys.readouterr().err
    assert len(err) < 3 * logs.LOG_VALUE_MAX
    assert "\x1b[2J" not in err
    assert len(err.strip().splitlines()) == 1


def test_lines_follow_stderr_when_it_is_swapped_after_configure() -> None:
    """A stream closed after configure (a finished redirect) is never written to: no logging error."""
    import contextlib
    import io

    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(first):
        logs.configure(level="info", json_logs=True)
        structlog.get_logger("cost_sync.sync").info("sync.started")
    first.close()
    with contextlib.redirect_stderr(second):
        structlog.get_logger("cost_sync.sync").info("sync.finished")
    assert [line["event"] for line in lines(second.getvalue())] == ["sync.finished"]
