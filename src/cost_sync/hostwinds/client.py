"""The Hostwinds Cloud API client: read-only, polite, retried, and whitelisted at the boundary.

Guarantees:

- Only actions in :data:`READ_ONLY_ACTIONS` are sent; any other raises
  :class:`~cost_sync.errors.ForbiddenActionError` before a byte leaves the host.
- The API key travels only in the form body. It is never in a URL, a log line, an exception
  message or the client's ``repr``.
- Bodies are parsed with ``Decimal`` for every JSON number: no float ever holds a price.
- Raw bodies never leave the client (:mod:`~cost_sync.hostwinds.answers` reads them,
  :mod:`~cost_sync.hostwinds.sanitise` cleans them). Callers get :class:`~cost_sync.domain.models.Instance`,
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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import structlog

from cost_sync.domain.models import (
    Cycle,
    Instance,
    PriceCell,
    PriceList,
)
from cost_sync.domain.redact import (
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
from cost_sync.hostwinds.answers import (
    INSTANCE_ACTIONS,
    MESSAGE_MAX,
    NO_SERVICE,
    PlanKey,
    answer_items,
    is_auth_error,
    is_error_envelope,
    loads,
    read_cycle_prices,
    read_instance,
    read_instances,
    read_price_list,
    unwrap,
)
from cost_sync.hostwinds.retry import (
    BodyNotJSON,
    BodyUnreadable,
    Deadline,
    Outcome,
    RetryPolicy,
    describe_outcome,
    is_transient,
)
from cost_sync.hostwinds.sanitise import sanitise, scrub_body

__all__ = [
    "AUTH_ERROR_MESSAGE",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_URL",
    "READ_ONLY_ACTIONS",
    "HostwindsClient",
    "price_list_params",
]

_log = structlog.get_logger("cost_sync.hostwinds")

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
_RESERVED_PARAMS = frozenset({"action", "API"})

#: The default size cap: a 100,000-instance answer is about 40 MiB in the sandbox's shape, and real
#: answers carry more fields per instance; 256 MiB leaves room for that and bounds the damage.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024


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
        return unwrap(await self._call(action, params, instances=action in INSTANCE_ACTIONS))

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
                cause=describe_outcome(outcome, body),
                delay=round(delay, 3),
            )
            await self._sleep(delay)
            attempt += 1
            outcome, body = await self._attempt(form, instances=instances)
        return self._judge(action, attempt, outcome, body)

    def _judge(self, action: str, attempt: int, outcome: Outcome, body: Any) -> Any:
        """The body of a final attempt (still wrapped), or the error it stands for (counted either way)."""
        if is_error_envelope(body) and not is_transient(outcome, body):
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
                HostwindsUnreadableError if isinstance(outcome, BodyNotJSON) else HostwindsTransientError
            )
            raise transient(
                f"{action}: Hostwinds did not answer after {attempt} attempts "
                f"(last: {describe_outcome(outcome, body)})"
            ) from (outcome if isinstance(outcome, httpx.HTTPError) else None)
        if not isinstance(outcome, httpx.Response) or not outcome.is_success:
            self.requests[action, "error"] += 1
            if isinstance(outcome, BodyUnreadable):
                raise HostwindsResponseError(f"{action}: the answer cannot be read ({outcome})")
            if isinstance(outcome, httpx.HTTPError):
                raise HostwindsResponseError(
                    f"{action}: the request failed ({describe_outcome(outcome)})"
                ) from outcome
            raise HostwindsResponseError(f"{action}: Hostwinds answered {describe_outcome(outcome)}")
        self.requests[action, "ok"] += 1
        return body

    async def get_instances(self) -> list[Instance]:
        """Every instance on the account, whitelisted."""
        return read_instances(await self.call("get_instances"))

    async def get_instance(self, serviceid: int) -> Instance:
        """One instance by its service id, whitelisted; a different service in the answer is an error."""
        action = "get_instance"
        items = answer_items(action, await self.call(action, serviceid=serviceid), single_key="serviceid")
        if len(items) != 1:
            raise HostwindsResponseError(
                f"{action}: expected one instance for service {serviceid}, got {len(items)}"
            )
        if items[0] is NO_SERVICE:
            raise HostwindsResponseError(f"{action}: the answer names serviceid twice with different values")
        instance = read_instance(action, items[0], "")
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

    async def _attempt(self, form: dict[str, str], *, instances: bool) -> tuple[Outcome, Any]:
        """One HTTP request under the rate limit: its outcome and its JSON body (None if none)."""
        async with self._semaphore:
            await self._throttle()
            try:
                # One deadline for connecting, sending and reading the whole body: httpx's own
                # timeouts are per read, so a body trickling in forever would never trip them.
                async with asyncio.timeout(self._timeout):
                    response, content = await self._send(form)
            except TimeoutError:
                return Deadline(self._timeout or 0), None
            except httpx.HTTPError as exc:
                return exc, None
            except BodyUnreadable as exc:
                return exc, None
        try:
            return response, loads(scrub_body(content, self._key_spellings), instances=instances)
        except RecursionError:
            return BodyUnreadable("JSON nested too deeply"), None
        except ValueError:
            if response.is_success:
                return BodyNotJSON(response.status_code), None
            return response, None

    async def _send(self, form: dict[str, str]) -> tuple[httpx.Response, bytearray]:
        """POST the form and read the body, at most ``max_response_bytes`` of it."""
        limit = self._max_response_bytes
        request = self._http.build_request("POST", self._url, data=form)
        response = await self._http.send(request, stream=True)
        try:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise BodyUnreadable(f"Content-Length {declared} is over max_response_bytes {limit}")
            # The bytes, not .text: a large answer is then not kept twice (bytes and str).
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > limit:
                    raise BodyUnreadable(f"larger than max_response_bytes {limit}")
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
        if any(is_auth_error(item) for item in errors):
            return HostwindsAuthError(AUTH_ERROR_MESSAGE)
        first = errors[0]
        message = self._scrub(first.get("message"), MESSAGE_MAX) or "no message"
        code = self._scrub(first.get("ERROR"), 20)
        suffix = f" (code {code})" if code else ""
        return HostwindsErrorEnvelope(f"{action}: Hostwinds answered an error: {message}{suffix}")

    def _scrub(self, value: object, limit: int) -> str:
        if value is None:
            return ""
        return redact(value, limit=limit, secrets=(self._api_key,))


def price_list_params(*, managed: bool, drive_type: str | None) -> dict[str, str | int]:
    """The parameters of cost-sync's ``get_price_list`` (``managed`` always: Hostwinds' default is 1)."""
    params: dict[str, str | int] = {"managed": int(managed)}
    if drive_type is not None:
        params["drive_type"] = drive_type
    return params


def _param_text(value: str | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
