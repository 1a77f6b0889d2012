"""Whether a Hostwinds request is worth trying again, and when: the outcomes of an attempt,
:func:`is_transient` and :class:`RetryPolicy` (jittered backoff, ``Retry-After``)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeAlias

import httpx

from cost_sync.hostwinds.answers import is_auth_error, is_error_envelope

__all__ = [
    "BodyNotJSON",
    "BodyUnreadable",
    "Deadline",
    "Outcome",
    "RetryPolicy",
    "describe_outcome",
    "is_transient",
]


class Deadline(Exception):
    """An attempt did not get its whole answer within the client's timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:g} s")


class BodyUnreadable(Exception):
    """A body that cannot be read safely: too large, or nested too deeply. Not retried."""


class BodyNotJSON(Exception):
    """A successful HTTP status carried a body that is not JSON (typically an HTML error page)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"a body that is not JSON (HTTP {status_code})")
        self.status_code = status_code


#: What one HTTP attempt produced, before it is judged.
Outcome: TypeAlias = httpx.Response | httpx.HTTPError | BodyNotJSON | Deadline | BodyUnreadable


#: An error envelope whose message says the caller is going too fast: worth waiting for.
_SLOW_DOWN = re.compile(r"rate.?limit|too many|please wait|try again", re.IGNORECASE)


def is_transient(outcome: httpx.Response | BaseException, body: Any = None) -> bool:
    """True when an attempt may succeed if repeated.

    Timeout, transport error, 429, 5xx, a non-JSON body, or an error envelope (whatever the HTTP
    status) whose message says to slow down; never a refused key.
    """
    if is_error_envelope(body):
        return _is_slow_down(body)
    if isinstance(outcome, httpx.Response):
        return outcome.status_code == 429 or outcome.status_code >= 500
    return isinstance(outcome, httpx.TimeoutException | httpx.TransportError | BodyNotJSON | Deadline)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a Hostwinds request again: :meth:`after` answers "in N seconds" or None (give up)."""

    attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0

    def after(self, attempt: int, outcome: Outcome, body: Any = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when that attempt is not worth it."""
        if attempt >= self.attempts or not is_transient(outcome, body):
            return None
        if isinstance(outcome, httpx.Response):
            retry_after = _retry_after_seconds(outcome.headers.get("Retry-After"))
            if retry_after is not None:
                return min(retry_after, self.retry_after_max)
        # Full jitter: a random wait below an exponentially growing, bounded ceiling.
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)


def _is_slow_down(body: Any) -> bool:
    items = body if isinstance(body, list) else [body]
    errors = [i for i in items if isinstance(i, dict) and i.get("result") == "error"]
    if any(is_auth_error(item) for item in errors):
        return False
    return any(_SLOW_DOWN.search(str(item.get("message") or "")) for item in errors)


def describe_outcome(outcome: Outcome, body: Any = None) -> str:
    """A short cause for logs and messages: a status or an exception type, never a body."""
    if is_error_envelope(body):
        return "an error envelope asking to slow down"
    if isinstance(outcome, httpx.Response):
        return f"HTTP {outcome.status_code}"
    if isinstance(outcome, BodyNotJSON | Deadline | BodyUnreadable):
        return str(outcome)
    if isinstance(outcome, httpx.TimeoutException):
        return f"timeout ({type(outcome).__name__})"
    return type(outcome).__name__


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)  # float-ok: seconds, not money
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
