"""The Hostwinds Cloud API client: read-only, polite, retried, and whitelisted at the boundary.

Guarantees:

- Only actions in :data:`READ_ONLY_ACTIONS` are sent; any other raises
  :class:`~cost_sync.errors.ForbiddenActionError` before a byte leaves the host.
- The API key travels only in the form body. It is never in a URL, a log line, an exception
  message or the client's ``repr``.
- Bodies are parsed with ``Decimal`` for every JSON number: no float ever holds a price.
- Raw bodies never leave this module. Callers get :class:`~cost_sync.domain.models.Instance`,
  :class:`~cost_sync.domain.models.Plan` and ``{Cycle: PriceCell}``; passwords and config keys are
  dropped here, and error messages carry field locations, never field values.
- Errors are detected by the body whatever the HTTP status. Failures map onto the
  :mod:`cost_sync.errors` tree::

      HostwindsAuthError        the key was refused; never retried
      HostwindsTransientError   timeout, transport error, 429, 5xx, a non-JSON body, or an error
                                envelope saying the caller goes too fast ("rate limit",
                                "too many", "please wait", "try again"), after ``attempts``
                                tries with bounded, jittered backoff
      HostwindsResponseError    an error envelope, another HTTP status, or a body of the wrong shape
      ForbiddenActionError      an action outside the allow-list; nothing was sent

- Every attempt has a deadline (``timeout``) covering the whole exchange, body included, and reads
  at most ``max_response_bytes``: an endless or trickling body fails that attempt instead of
  filling memory or holding the run. A body too large or too deeply nested to read is an error,
  not a crash. Text from Hostwinds in an error passes :func:`cost_sync.domain.redact.redact`.
- Whether and when to try again is decided by :class:`RetryPolicy` alone (a predicate in the
  manner of stamina's: "retry after N seconds" or "give up"); :meth:`HostwindsClient.call` only
  sends, asks the policy, and judges the final outcome.
- Request starts are spaced to at most ``requests_per_second`` across all concurrent callers, with
  at most ``max_concurrency`` requests in flight. The client never closes the ``httpx.AsyncClient``
  it was handed.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeAlias

import httpx
import structlog
from pydantic import ValidationError

from cost_sync.domain.models import (
    INSTANCE_FIELDS,
    PRICED_CYCLES,
    Cycle,
    Instance,
    Plan,
    PriceCell,
    PriceList,
    UnreadableRow,
    dropped_fields,
    parse_instance,
    storable_text,
)
from cost_sync.domain.pricing import bounded_cell
from cost_sync.domain.redact import (
    REDACTED,
    SECRET_FIELD_NAMES,
    SECRET_FIELD_WORDS,
    has_secret,
    is_secret_field,
    redact,
    secret_spellings,
)
from cost_sync.errors import (
    ForbiddenActionError,
    HostwindsAuthError,
    HostwindsError,
    HostwindsErrorEnvelope,
    HostwindsResponseError,
    HostwindsTransientError,
    HostwindsUnreadableError,
)

__all__ = [
    "AUTH_ERROR_MESSAGE",
    "DEFAULT_URL",
    "DENY_FIELDS",
    "READ_ONLY_ACTIONS",
    "TEXT_MAX",
    "HostwindsClient",
    "PlanKey",
    "PriceList",
    "RetryPolicy",
    "UnreadableRow",
    "clean_text",
    "is_denied_field",
    "is_transient",
    "price_cell_text",
    "price_list_params",
    "read_cycle_prices",
    "read_instances",
    "read_price_list",
    "sanitise",
    "unwrap",
]

READ_ONLY_ACTIONS = frozenset(
    {
        "get_instances",
        "get_instance",
        "get_price_list",
        "get_billingcycle_prices",
        "check_upgrade_order",
    }
)
DEFAULT_URL = "https://clients.hostwinds.com/cloud/api.php"
AUTH_ERROR_MESSAGE = (
    "Hostwinds refused the API key (expired, or this host's IPv4 address is not on the key's allow-list)"
)

_log = structlog.get_logger("cost_sync.hostwinds")

_MESSAGE_MAX = 200
_CELL_FIELDS = ("price", "total", "amount")
_CYCLES_BY_KEY: dict[str, Cycle] = {c.value: c for c in PRICED_CYCLES}
_RESERVED_PARAMS = frozenset({"action", "API"})


class _Deadline(Exception):
    """An attempt did not get its whole answer within the client's timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:g} s")


class _BodyUnreadable(Exception):
    """A body that cannot be read safely: too large, or nested too deeply. Not retried."""


class _BodyNotJSON(Exception):
    """A successful HTTP status carried a body that is not JSON (typically an HTML error page)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"a body that is not JSON (HTTP {status_code})")
        self.status_code = status_code


#: What one HTTP attempt produced, before it is judged.
_Outcome: TypeAlias = httpx.Response | httpx.HTTPError | _BodyNotJSON | _Deadline | _BodyUnreadable

#: The default size cap: a 100,000-instance answer is about 40 MiB in the sandbox's shape, and real
#: answers carry more fields per instance; 256 MiB leaves room for that and bounds the damage.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024


#: An error envelope whose message says the caller is going too fast: worth waiting for.
_SLOW_DOWN = re.compile(r"rate.?limit|too many|please wait|try again", re.IGNORECASE)


def is_transient(outcome: httpx.Response | BaseException, body: Any = None) -> bool:
    """True when an attempt may succeed if repeated.

    Timeout, transport error, 429, 5xx, a non-JSON body, or an error envelope (whatever the HTTP
    status) whose message says to slow down; never a refused key.
    """
    if _is_error_envelope(body):
        return _is_slow_down(body)
    if isinstance(outcome, httpx.Response):
        return outcome.status_code == 429 or outcome.status_code >= 500
    return isinstance(outcome, httpx.TimeoutException | httpx.TransportError | _BodyNotJSON | _Deadline)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a Hostwinds request again: :meth:`after` answers "in N seconds" or None (give up)."""

    attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0

    def after(self, attempt: int, outcome: _Outcome, body: Any = None) -> float | None:
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


def price_cell_text(value: object) -> PriceCell:
    """The exact text of one price cell, so that only pricing decides what it means; at most
    :data:`cost_sync.domain.pricing.MAX_CELL_TEXT` characters
    (:func:`cost_sync.domain.pricing.bounded_cell`)."""
    return bounded_cell(_cell_text(value))


def _cell_text(value: object) -> PriceCell:
    if isinstance(value, Mapping):
        texts = {
            _scalar_text(value[name])
            for name in _CELL_FIELDS
            if value.get(name) is not None and not isinstance(value[name], Mapping | list)
        }
        if len(texts) == 1:
            return texts.pop()
        # No price field, or fields that disagree: keep the JSON so pricing reports it as invalid.
        return _json_text(value)
    return _scalar_text(value)


class HostwindsClient:
    """An async client for the read-only part of the Hostwinds Cloud API."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: str,
        *,
        url: str = DEFAULT_URL,
        requests_per_second: float | None = 2.0,
        max_concurrency: int = 4,
        attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        retry_after_max: float = 60.0,
        timeout: float | None = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._http = http
        self._api_key = api_key
        self._url = url
        self._interval = (
            1.0 / requests_per_second if requests_per_second and requests_per_second > 0 else None
        )
        self._next_start = 0.0
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._retry = RetryPolicy(attempts, backoff_initial, backoff_max, retry_after_max)
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._sleep = sleep
        #: Every spelling of the key (form- and percent-encoded, base64...), as bytes.
        self._key_spellings = tuple(s.encode("utf-8") for s in secret_spellings(api_key))
        self._calls: collections.Counter[str] = collections.Counter()
        #: (action, outcome) -> HTTP requests sent; outcome is ok, error, auth_error or transient.
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()

    def __repr__(self) -> str:
        return f"HostwindsClient(url={self._url!r})"

    @property
    def calls(self) -> dict[str, int]:
        """Logical calls made per action, retries not counted."""
        return dict(self._calls)

    async def call(self, action: str, **params: str | int) -> Any:
        """Send one allowed action and return its answer, unwrapped from ``{"success": ...}``."""
        return unwrap(await self._call(action, params, instances=action in _INSTANCE_ACTIONS))

    async def sanitised_body(self, action: str, **params: str | int) -> Any:
        """Send one allowed action and return its whole JSON body (envelope kept) with every field
        on :data:`DENY_FIELDS` removed at any depth and any text holding the API key dropped.

        For ``doctor``'s shape checks and ``--capture``: the body as Hostwinds shaped it, but
        nothing secret in it. Error envelopes raise as with :meth:`call`.
        """
        return sanitise(await self._call(action, params, instances=False), secret=self._api_key)

    async def _call(self, action: str, params: Mapping[str, str | int], *, instances: bool) -> Any:
        """One allowed action's JSON body; errors raised as the module docstring says."""
        if action not in READ_ONLY_ACTIONS:
            raise ForbiddenActionError(
                f"{action!r} is not on cost-sync's read-only allow-list; nothing was sent"
            )
        if _RESERVED_PARAMS & params.keys():
            raise ValueError("action and API are set by the client, not passed as parameters")
        self._calls[action] += 1
        form = {"action": action, "API": self._api_key}
        form.update({name: _param_text(value) for name, value in params.items()})

        attempt = 1
        outcome, body = await self._attempt(form, instances=instances)
        while (delay := self._retry.after(attempt, outcome, body)) is not None:
            self.requests[action, "transient"] += 1
            _log.warning(
                "hostwinds.retry",
                action=action,
                attempt=attempt,
                cause=_describe(outcome, body),
                delay=round(delay, 3),
            )
            await self._sleep(delay)
            attempt += 1
            outcome, body = await self._attempt(form, instances=instances)
        return self._judge(action, attempt, outcome, body)

    def _judge(self, action: str, attempt: int, outcome: _Outcome, body: Any) -> Any:
        """The body of a final attempt (still wrapped), or the error it stands for (counted either way)."""
        if _is_error_envelope(body) and not is_transient(outcome, body):
            error = self._envelope_error(action, body)
            if isinstance(error, HostwindsErrorEnvelope):
                error.answer = sanitise(body, secret=self._api_key)
                error.status = outcome.status_code if isinstance(outcome, httpx.Response) else 200
            kind = "auth_error" if isinstance(error, HostwindsAuthError) else "error"
            self.requests[action, kind] += 1
            raise error
        if is_transient(outcome, body):
            self.requests[action, "transient"] += 1
            transient: type[HostwindsTransientError] = (
                HostwindsUnreadableError if isinstance(outcome, _BodyNotJSON) else HostwindsTransientError
            )
            raise transient(
                f"{action}: Hostwinds did not answer after {attempt} attempts "
                f"(last: {_describe(outcome, body)})"
            ) from (outcome if isinstance(outcome, httpx.HTTPError) else None)
        if not isinstance(outcome, httpx.Response) or not outcome.is_success:
            self.requests[action, "error"] += 1
            if isinstance(outcome, _BodyUnreadable):
                raise HostwindsResponseError(f"{action}: the answer cannot be read ({outcome})")
            if isinstance(outcome, httpx.HTTPError):
                raise HostwindsResponseError(
                    f"{action}: the request failed ({_describe(outcome)})"
                ) from outcome
            raise HostwindsResponseError(f"{action}: Hostwinds answered {_describe(outcome)}")
        self.requests[action, "ok"] += 1
        return body

    async def get_instances(self) -> list[Instance]:
        """Every instance on the account, whitelisted."""
        return read_instances(await self.call("get_instances"))

    async def get_instance(self, serviceid: int) -> Instance:
        """One instance by its service id, whitelisted; a different service in the answer is an error."""
        action = "get_instance"
        items = _items(action, await self.call(action, serviceid=serviceid), single_key="serviceid")
        if len(items) != 1:
            raise HostwindsResponseError(
                f"{action}: expected one instance for service {serviceid}, got {len(items)}"
            )
        if items[0] is _NO_SERVICE:
            raise HostwindsResponseError(f"{action}: the answer names serviceid twice with different values")
        instance = _instance(action, items[0], "")
        if instance.serviceid != serviceid:
            raise HostwindsResponseError(
                f"{action}: asked for service {serviceid}, got service {instance.serviceid}"
            )
        return instance

    async def get_price_list(
        self, *, managed: bool, drive_type: str | None, plan_key: PlanKey = "id"
    ) -> PriceList:
        """The plans Hostwinds lists for these options, keyed by ``plan_key``, with their price cells
        (and the rows that could not be read, see :func:`read_price_list`)."""
        return read_price_list(
            await self.call("get_price_list", **price_list_params(managed=managed, drive_type=drive_type)),
            plan_key=plan_key,
        )

    async def get_billingcycle_prices(self, serviceid: int) -> dict[Cycle, PriceCell]:
        """One service's price cell per billing cycle; {} when Hostwinds has no data for it."""
        return read_cycle_prices(serviceid, await self.call("get_billingcycle_prices", serviceid=serviceid))

    async def _attempt(self, form: dict[str, str], *, instances: bool) -> tuple[_Outcome, Any]:
        """One HTTP request under the rate limit: its outcome and its JSON body (None if none)."""
        async with self._semaphore:
            await self._throttle()
            try:
                # One deadline for connecting, sending and reading the whole body: httpx's own
                # timeouts are per read, so a body trickling in forever would never trip them.
                async with asyncio.timeout(self._timeout):
                    response, content = await self._send(form)
            except TimeoutError:
                return _Deadline(self._timeout or 0), None
            except httpx.HTTPError as exc:
                return exc, None
            except _BodyUnreadable as exc:
                return exc, None
        try:
            return response, _loads(_scrub_body(content, self._key_spellings), instances=instances)
        except RecursionError:
            return _BodyUnreadable("JSON nested too deeply"), None
        except ValueError:
            if response.is_success:
                return _BodyNotJSON(response.status_code), None
            return response, None

    async def _send(self, form: dict[str, str]) -> tuple[httpx.Response, bytearray]:
        """POST the form and read the body, at most ``max_response_bytes`` of it."""
        limit = self._max_response_bytes
        request = self._http.build_request("POST", self._url, data=form)
        response = await self._http.send(request, stream=True)
        try:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _BodyUnreadable(f"Content-Length {declared} is over max_response_bytes {limit}")
            # The bytes, not .text: a large answer is then not kept twice (bytes and str).
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > limit:
                    raise _BodyUnreadable(f"larger than max_response_bytes {limit}")
        finally:
            await response.aclose()
        return response, content

    async def _throttle(self) -> None:
        """Wait for this request's start slot, so starts are at least one interval apart."""
        if self._interval is None:
            return
        now = asyncio.get_running_loop().time()
        # No await between reading and reserving the slot, so concurrent callers cannot share one.
        start = max(now, self._next_start)
        self._next_start = start + self._interval
        if start > now:
            await self._sleep(start - now)

    def _envelope_error(self, action: str, body: Any) -> HostwindsError:
        """The error an error envelope stands for; the key and control characters are scrubbed."""
        items = body if isinstance(body, list) else [body]
        errors = [i for i in items if isinstance(i, dict) and i.get("result") == "error"]
        if any(_is_auth_error(item) for item in errors):
            return HostwindsAuthError(AUTH_ERROR_MESSAGE)
        first = errors[0]
        message = self._scrub(first.get("message"), _MESSAGE_MAX) or "no message"
        code = self._scrub(first.get("ERROR"), 20)
        suffix = f" (code {code})" if code else ""
        return HostwindsErrorEnvelope(f"{action}: Hostwinds answered an error: {message}{suffix}")

    def _scrub(self, value: object, limit: int) -> str:
        if value is None:
            return ""
        return redact(value, limit=limit, secrets=(self._api_key,))


#: Which price-list field an instance's ``product_id`` names (``[hostwinds] plan_key``).
PlanKey = Literal["id", "rid"]

#: Fields removed from every body ``sanitised_body`` returns (``doctor --capture`` writes only
#: sanitised bodies): :func:`cost_sync.domain.redact.is_secret_field`'s names, and any field whose name
#: contains one of its words. Any string holding the API key (in any spelling) is dropped as well.
DENY_FIELDS = SECRET_FIELD_NAMES | frozenset(SECRET_FIELD_WORDS)


def is_denied_field(name: str) -> bool:
    """True for a secret field name (:func:`cost_sync.domain.redact.is_secret_field`, the one list)."""
    return is_secret_field(name)


def sanitise(value: Any, *, secret: str = "") -> Any:
    """``value`` with secret fields removed at any depth, and strings holding ``secret`` (in any
    spelling, or as the client already replaced it, ``[redacted]``) dropped."""
    secrets = (secret,) if secret else ()

    def holds_secret(item: Any) -> bool:
        return isinstance(item, str) and (REDACTED in item or has_secret(item, secrets))

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: clean(item)
                for key, item in node.items()
                if not is_secret_field(str(key)) and not holds_secret(item)
            }
        if isinstance(node, list):
            return [clean(item) for item in node if not holds_secret(item)]
        return node

    return clean(value)


def unwrap(body: Any) -> Any:
    """The answer under ``{"success": ...}``; a body without that wrapper is its own answer."""
    if isinstance(body, Ambiguous) and "success" in body.differing:
        raise HostwindsResponseError("the answer names success twice with different values")
    if isinstance(body, dict) and "success" in body:
        return body["success"]
    return body


def price_list_params(*, managed: bool, drive_type: str | None) -> dict[str, str | int]:
    """The parameters of cost-sync's ``get_price_list`` (``managed`` always: Hostwinds' default is 1)."""
    params: dict[str, str | int] = {"managed": int(managed)}
    if drive_type is not None:
        params["drive_type"] = drive_type
    return params


def read_instances(answer: Any) -> list[Instance]:
    """The instances of a ``get_instances`` answer (unwrapped), whitelisted; raises on a wrong shape."""
    action = "get_instances"
    items = _items(action, answer, single_key="serviceid")
    instances = []
    for index, item in enumerate(items):
        if item is _NO_SERVICE:
            continue
        readings = item if isinstance(item, _Readings) else [item]
        instances += [_instance(action, reading, f"item {index}: ") for reading in readings]
    return instances


class _RowUnreadable(Exception):
    def __init__(self, path: str, detail: str, *, custom: bool = False) -> None:
        super().__init__(detail)
        self.path = path
        self.detail = detail
        self.custom = custom


def read_price_list(answer: Any, *, plan_key: PlanKey = "id") -> PriceList:
    """The plans of a ``get_price_list`` answer (unwrapped), keyed by ``plan_key``, read row by row.

    Rows are found wherever the answer puts them: a list, an object keyed by id, or lists and
    objects nested under group keys (fixed and custom plans). A row is an object with an ``id``, a
    ``rid``, a cycle-price field or a ``pricing`` object, or any object under a numeric key; the
    reader never looks inside a row for further rows, so objects keyed by cycle in a row
    (``promo``, ``cycles``, ``firsts``) are never rows or prices, and the options inside
    ``pricing`` are never plans, whatever ``plan_key`` says.

    A row the reader cannot use (no usable cycle price, a cell that is not a number, an id that is
    not an integer, a custom plan priced only through ``pricing``) is skipped and listed in
    :attr:`PriceList.unreadable` with the path where reading stopped; the other rows are read. The
    answer fails as a whole only when it is not empty and no row in it can be read. Rows without
    the ``plan_key`` field cannot be joined and are left out.
    """
    action = "get_price_list"
    plans: dict[int, Plan] = {}
    unreadable: list[UnreadableRow] = []
    conflicting: set[int] = set()
    candidates = _price_rows(action, answer)
    readable = 0
    for where, row in candidates:
        if not isinstance(row, dict):
            unreadable.append(
                UnreadableRow(None, where, False, f"expected a price-list row or a group, got {_kind(row)}")
            )
            continue
        key = _row_key(row, plan_key)
        ambiguous = _ambiguous_keys(row)
        if ambiguous:
            # Which price was meant cannot be known: the row is unreadable, its instances unpriced.
            _log.warning("hostwinds.ambiguous_plan", where=where, keys=ambiguous)
            detail = f"names {', '.join(ambiguous)} twice with different values"
            unreadable.append(UnreadableRow(key, where, False, detail))
            continue
        try:
            plan = _plan(action, where, row)
        except _RowUnreadable as exc:
            unreadable.append(UnreadableRow(key, exc.path, exc.custom, exc.detail))
            continue
        readable += 1
        key = plan.id if plan_key == "id" else plan.rid
        if key is None:
            continue
        if key in conflicting:
            continue
        if plans.get(key, plan) != plan:
            by = "" if plan_key == "id" else f" ({plan_key})"
            # Neither row is trusted: which one is the plan's price is unknowable.
            del plans[key]
            conflicting.add(key)
            unreadable.append(
                UnreadableRow(key, where, plan.custom, f"two different rows for plan {key}{by}")
            )
            continue
        plans[key] = plan
    if candidates and readable == 0:
        first = unreadable[0]
        raise HostwindsResponseError(
            f"{action}: no price-list row could be read; reading stopped at {first.path}: {first.detail}"
        )
    return PriceList(plans, unreadable)


def _row_key(row: Mapping[str, Any], plan_key: PlanKey) -> int | None:
    """A row's join key when it is an integer (also for a row that cannot be read otherwise)."""
    value = row.get(plan_key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def read_cycle_prices(serviceid: int, answer: Any) -> dict[Cycle, PriceCell]:
    """One service's cycle prices from a ``get_billingcycle_prices`` answer; {} for an empty answer."""
    action = "get_billingcycle_prices"
    if answer is None or (isinstance(answer, dict | list) and not answer):
        return {}
    where = f"service {serviceid}: "
    ambiguous = _ambiguous_keys(answer)
    if ambiguous:
        # Fails this service alone (its rows: cycle_prices_unavailable), as an unreadable answer does.
        raise HostwindsResponseError(
            f"{action}: {where}the answer names {', '.join(ambiguous)} twice with different values"
        )
    if not isinstance(answer, dict):
        raise HostwindsResponseError(
            f"{action}: {where}expected an object of cycle prices, got {_kind(answer)}"
        )
    cells = _cycle_cells(action, where, answer)
    if not cells:
        # A non-empty answer in an unknown shape must not silently become "no data".
        raise HostwindsResponseError(f"{action}: {where}the answer names no billing cycle")
    return cells


def _ambiguous_keys(node: Any, depth: int = 0) -> list[str]:
    """The keys an object in ``node`` names twice with different values (the first such object)."""
    if isinstance(node, Ambiguous):
        return sorted(redact(key, limit=40) for key in node.differing)
    if depth < 8 and isinstance(node, dict | list):
        for item in node.values() if isinstance(node, dict) else node:
            found = _ambiguous_keys(item, depth + 1)
            if found:
                return found
    return []


def _has_cycle_field(obj: Mapping[str, Any]) -> bool:
    return any(_normalise_key(str(key)) in _CYCLES_BY_KEY for key in obj)


#: Fields that make an object a price-list row (beside a cycle-price field): the reader never
#: looks inside one for further rows.
_ROW_FIELDS = frozenset({"id", "rid", "pricing"})


def _is_row(node: Mapping[str, Any], key: str | None) -> bool:
    return (
        bool(_ROW_FIELDS & node.keys())
        or _has_cycle_field(node)
        or (key is not None and key.strip().isdigit())
    )


def _price_rows(action: str, answer: Any) -> list[tuple[str, Any]]:
    """Every price-list row candidate in the answer with its path (``answer.fixed[0]``), in answer
    order; an item in a list that is neither an object nor a list is a candidate the reader will
    skip. Raises when a non-empty answer holds no candidate at all, naming where reading stopped."""
    rows: list[tuple[str, Any]] = []
    dead_ends: list[str] = []

    def walk(node: Any, path: str, key: str | None) -> None:
        if isinstance(node, dict):
            if node and _is_row(node, key):
                rows.append((path, node))
                return
            for name, value in node.items():
                if isinstance(value, dict | list):
                    walk(value, f"{path}.{name}", str(name))
                else:
                    dead_ends.append(f"{path}.{name}: {_kind(value)}")
            if not node:
                dead_ends.append(f"{path}: an empty object")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, dict | list):
                    walk(item, f"{path}[{index}]", None)
                else:
                    rows.append((f"{path}[{index}]", item))
        else:
            raise HostwindsResponseError(
                f"{action}: {path}: expected a price-list row or a group, got {_kind(node)}"
            )

    if answer is None or (isinstance(answer, dict | list) and not answer):
        return []
    walk(answer, "answer", None)
    if not rows:
        stop = dead_ends[0] if dead_ends else "answer: no object with an id and a cycle price"
        raise HostwindsResponseError(f"{action}: no price-list row found; reading stopped at {stop}")
    return rows


_REDACTED_BYTES = REDACTED.encode()


def _scrub_body(content: bytearray, spellings: tuple[bytes, ...]) -> bytearray:
    """The body with every spelling of the key replaced by ``[redacted]``, before it is parsed.

    A key Hostwinds echoes back (in an error, a product name, a price cell) then reaches nothing
    downstream in any spelling. The replacement holds no JSON-special character, so the body
    stays valid JSON wherever the key was. ``in`` first: a body without the key is not copied.
    """
    if b"\\u00" in content:
        # An ASCII character written as a JSON escape ("\u0068" for "h") would let the key through
        # spelled that way: such escapes are written as the characters they stand for (the same
        # JSON), except a quote, a backslash and control characters, which must stay escaped.
        content = bytearray(_ASCII_ESCAPE.sub(_unescape_ascii, content))
    for spelling in spellings:
        if spelling in content:
            content = content.replace(spelling, _REDACTED_BYTES)
    return content


# An escape \u00XX for a printable ASCII character, not itself escaped (an even number of
# backslashes before it).
_ASCII_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u00([2-7][0-9A-Fa-f])")


def _unescape_ascii(match: re.Match[bytes]) -> bytes:
    char = int(match.group(2), 16)
    if char in (0x22, 0x5C, 0x7F):
        return match.group(0)
    return match.group(1) + bytes([char])


#: The longest text from Hostwinds an instance or a plan keeps (product names, statuses...).
TEXT_MAX = 200


#: Short texts already cleaned (a fleet repeats a handful of names, cycles and statuses across
#: thousands of instances): at most _CLEAN_MAX entries of at most TEXT_MAX characters.
_CLEANED: dict[str, str] = {}
_CLEAN_MAX = 4096
_HEX_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")


def clean_text(value: Any) -> Any:
    """A text field from Hostwinds as cost-sync keeps it: one printable line of at most
    :data:`TEXT_MAX` characters, secret-shaped values redacted; anything else as it is.

    Text PostgreSQL cannot store (a NUL, a lone surrogate) is left as it is: the model makes it
    unknown, and the client logs it as dropped.
    """
    if not isinstance(value, str):
        return value
    cleaned = _CLEANED.get(value)
    if cleaned is not None:
        return cleaned
    if _HEX_ID.fullmatch(value):
        # A uuid (one per instance, so never seen twice): nothing in it can be secret-shaped.
        return value
    if not storable_text(value):
        return value
    if len(value) > TEXT_MAX:
        # Not kept: the memo would hold the long text (memory stays bounded whatever is sent).
        return redact(value, limit=TEXT_MAX)
    cleaned = redact(value, limit=TEXT_MAX)
    if len(_CLEANED) < _CLEAN_MAX:
        _CLEANED[value] = cleaned
    return cleaned


def _kept_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an Instance keeps, their text cleaned (:func:`clean_text`)."""
    # The memo is asked inline: this runs for every field of 100,000 instances.
    memo = _CLEANED.get
    return {
        key: (memo(value) or clean_text(value)) if value.__class__ is str else value
        for key, value in obj.items()
        if key in INSTANCE_FIELDS
    }


class Ambiguous(dict[str, Any]):
    """A JSON object that names a key twice with different values (as a dict: the last one wins).

    Which value Hostwinds meant cannot be known, so the object is refused where it matters: a
    service's cycle prices fail for that service, an instance becomes two readings that conflict
    (that service is unpriced as ``duplicate_instance``), a price-list row is unreadable.
    """

    first: dict[str, Any]
    differing: frozenset[str]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    first: dict[str, Any] = {}
    differing = set()
    for key, value in pairs:
        if key in first and first[key] != value:
            differing.add(key)
        first.setdefault(key, value)
    if not differing:
        return obj  # the same value twice: harmless
    ambiguous = Ambiguous(obj)
    ambiguous.first = first
    ambiguous.differing = frozenset(differing)
    return ambiguous


def _big_int(text: str) -> int | Decimal:
    # An integer longer than Python converts (sys.get_int_max_str_digits) is kept as a Decimal:
    # as a price it is then out of range for that row, as an id it is refused for that instance.
    return int(text) if len(text) <= 4000 else Decimal(text)


def _loads(body: bytes | bytearray | str, *, instances: bool = False) -> Any:
    # parse_constant too: NaN/Infinity become Decimals that pricing rejects, never floats.
    hook = _instance_pairs if instances else _object
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=Decimal, object_pairs_hook=hook)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    # A 5,000-digit integer somewhere: parsed again, slower, with every integer checked.
    return json.loads(
        body, parse_float=Decimal, parse_constant=Decimal, parse_int=_big_int, object_pairs_hook=hook
    )


class _Readings(list[Any]):
    """The two readings of an instance object that names a kept field twice, differently."""


#: Stands for an instance object whose serviceid itself is ambiguous: it names no service.
_NO_SERVICE = object()


_INSTANCE_ACTIONS = frozenset({"get_instances", "get_instance"})


def _instance_pairs(pairs: list[tuple[str, Any]]) -> Any:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        return _ambiguous_instance(pairs)
    return _instance_hook(obj)


def _ambiguous_instance(pairs: list[tuple[str, Any]]) -> Any:
    obj = _object(pairs)
    if isinstance(obj, Ambiguous) and "serviceid" in obj and obj.differing & INSTANCE_FIELDS:
        if "serviceid" in obj.differing:
            _log.warning("hostwinds.ambiguous_instance", keys=sorted(obj.differing), note="names no service")
            return _NO_SERVICE
        # First and last readings: they differ, so the service is priced on neither.
        return _Readings([_instance_hook(obj.first), _instance_hook(dict(obj.items()))])
    return _instance_hook(obj)


def _instance_hook(obj: dict[str, Any]) -> Any:
    # Each instance object becomes an Instance as soon as it is parsed: the root password and
    # configkey are dropped at once, and a 100,000-instance answer never holds every field of
    # every instance in memory at the same time. One that does not validate stays a (whitelisted)
    # dict, so that _instance() reports it with its position.
    if "serviceid" not in obj:
        return obj
    fields = _kept_fields(obj)
    try:
        return _checked(parse_instance(fields), fields)
    except ValidationError:
        return fields


def _checked(instance: Instance, fields: Mapping[str, Any]) -> Instance:
    """The instance, after logging any field it had to drop (a value PostgreSQL cannot store)."""
    dropped = dropped_fields(fields, instance)
    if dropped:
        _log.warning(
            "hostwinds.field_dropped",
            serviceid=instance.serviceid,
            fields=dropped,
            note="out of range, a NUL or invalid Unicode: the field is unknown for this run",
        )
    return instance


def _param_text(value: str | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _is_error_envelope(body: Any) -> bool:
    items = body if isinstance(body, list) else [body]
    return any(isinstance(item, dict) and item.get("result") == "error" for item in items)


def _is_slow_down(body: Any) -> bool:
    items = body if isinstance(body, list) else [body]
    errors = [i for i in items if isinstance(i, dict) and i.get("result") == "error"]
    if any(_is_auth_error(item) for item in errors):
        return False
    return any(_SLOW_DOWN.search(str(item.get("message") or "")) for item in errors)


def _is_auth_error(item: dict[str, Any]) -> bool:
    message = str(item.get("message") or "").strip().lower()
    action = str(item.get("action") or "").strip().lower()
    return message.startswith("not authorized") or action == "authorization"


def _describe(outcome: _Outcome, body: Any = None) -> str:
    """A short cause for logs and messages: a status or an exception type, never a body."""
    if _is_error_envelope(body):
        return "an error envelope asking to slow down"
    if isinstance(outcome, httpx.Response):
        return f"HTTP {outcome.status_code}"
    if isinstance(outcome, _BodyNotJSON | _Deadline | _BodyUnreadable):
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


def _kind(value: object) -> str:
    """The JSON type of a value, for messages that must not show the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _items(action: str, container: Any, *, single_key: str) -> list[Any]:
    """The items of a list, or the values of an object keyed by id; one bare item as a list of one."""
    if isinstance(container, list):
        return container
    if isinstance(container, Instance):
        return [container]
    if isinstance(container, dict):
        if single_key in container:
            return [container]
        return list(container.values())
    raise HostwindsResponseError(f"{action}: expected a list or an object of items, got {_kind(container)}")


def _validation_summary(exc: ValidationError) -> str:
    """Pydantic's errors as ``loc: msg`` only: the input values (a password!) never appear."""
    parts = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"])
        parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    return "; ".join(parts)[:_MESSAGE_MAX]


def _instance(action: str, item: Any, where: str) -> Instance:
    if isinstance(item, Instance):
        return item
    if not isinstance(item, dict):
        raise HostwindsResponseError(f"{action}: {where}expected an object, got {_kind(item)}")
    item = _kept_fields(item)
    try:
        return _checked(parse_instance(item), item)
    except ValidationError as exc:
        # from None: the chained ValidationError's text shows input values, passwords included.
        raise HostwindsResponseError(f"{action}: {where}{_validation_summary(exc)}") from None


def _plan(action: str, path: str, row: dict[str, Any]) -> Plan:
    """One row as a plan, or :class:`_RowUnreadable` naming where reading stopped."""
    where = f"{path}: "
    pricing_options = row.get("pricing")
    custom = isinstance(pricing_options, dict | list) and bool(pricing_options)
    for name in ("id", "rid"):
        if name in row and isinstance(row[name], bool):
            raise _RowUnreadable(f"{path}.{name}", "a boolean is not a plan id", custom=custom)
    if "id" not in row:
        raise _RowUnreadable(path, "a row with no id", custom=custom)
    try:
        cells = _cycle_cells(action, where, row)
    except HostwindsResponseError as exc:
        raise _RowUnreadable(path, str(exc).removeprefix(f"{action}: {where}"), custom=custom) from None
    if custom:
        # Beside a `pricing` object, "0.00" (or -1) means "priced per service", not "not offered":
        # only real prices are kept, and a cycle without one is a custom-plan cycle.
        cells = {c: text for c, text in cells.items() if _is_price(text)}
        if not cells:
            raise _RowUnreadable(
                f"{path}.pricing",
                "a custom plan priced per service (its cycle prices are resource options)",
                custom=True,
            )
    elif not any(_is_price(text) for text in cells.values()):
        if not cells:
            raise _RowUnreadable(path, "no cycle price")
        bad = next((c for c, text in cells.items() if not _is_number_or_blank(text)), None)
        if bad is not None:
            raise _RowUnreadable(f"{path}.{bad.value}", "a cycle price that is not a number")
    fields: dict[str, Any] = {"prices": cells, "custom": custom}
    for name in ("id", "rid"):
        if name in row:
            fields[name] = row[name]
    if isinstance(row.get("name"), str):
        fields["name"] = clean_text(row["name"])
    try:
        return Plan.model_validate(fields)
    except ValidationError as exc:
        summary = _validation_summary(exc)
        field_name = summary.split(":", 1)[0] if ":" in summary else ""
        raise _RowUnreadable(
            f"{path}.{field_name}" if field_name in ("id", "rid", "name") else path,
            summary.split(": ", 1)[1] if ": " in summary else summary,
            custom=custom,
        ) from None


_CELL_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _is_number_or_blank(text: PriceCell) -> bool:
    stripped = text.strip()
    return stripped == "" or _CELL_NUMBER.fullmatch(stripped) is not None


def _is_price(text: PriceCell) -> bool:
    """A cell holding a positive number (pricing decides the rest: range, cents)."""
    stripped = text.strip()
    if _CELL_NUMBER.fullmatch(stripped) is None:
        return False
    try:
        return Decimal(stripped) > 0
    except ArithmeticError:
        return False


def _cycle_cells(action: str, where: str, mapping: Mapping[str, Any]) -> dict[Cycle, PriceCell]:
    """The price cell of every key that names a priced cycle; other keys (promo, mtotal...) ignored."""
    cells: dict[Cycle, PriceCell] = {}
    for key, value in mapping.items():
        cycle = _CYCLES_BY_KEY.get(_normalise_key(str(key)))
        if cycle is None:
            continue
        text = price_cell_text(value)
        if cells.get(cycle, text) != text:
            raise HostwindsResponseError(f"{action}: {where}two different {cycle} prices")
        cells[cycle] = text
    return cells


def _normalise_key(key: str) -> str:
    return "".join(ch for ch in key.lower() if ch not in "-_ \t")


def _scalar_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _json_text(value)
    return str(value)


def _json_text(value: object) -> str:
    return json.dumps(value, default=str, sort_keys=True)
