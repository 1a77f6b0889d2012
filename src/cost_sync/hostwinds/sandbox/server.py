"""The sandbox's HTTP server: the Hostwinds protocol over a fleet, with faults."""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import re
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cost_sync.hostwinds.sandbox.faults import Faults
from cost_sync.hostwinds.sandbox.fleet import Container, Fleet, int_id
from cost_sync.runtime.httpserve import AppServer, form_fields

__all__ = [
    "API_PATH",
    "CUSTOM_PLAN_ID",
    "SANDBOX_API_KEY",
    "WRITE_ACTIONS",
    "SandboxServer",
    "custom_plan_row",
    "serve",
]

_log = structlog.get_logger("cost_sync.sandbox")

#: The path Hostwinds serves its Cloud API on; ``POST /`` is accepted too.
API_PATH = "/cloud/api.php"
#: The key of the demo fleet and of :func:`generate_fleet`: it opens nothing but a sandbox.
SANDBOX_API_KEY = "sandbox-hostwinds-key-not-real"

#: The id (and ``rid`` - 900) of the custom plan the ``openapi`` price-list shape adds.
CUSTOM_PLAN_ID = 60

#: Actions that change an account (and create invoices) at Hostwinds: refused here, loudly.
WRITE_ACTIONS = frozenset(
    {
        "add_instance",
        "change_billing_cycle",
        "create_snapshot",
        "delete_instance",
        "delete_snapshot",
        "reboot_server",
        "rebuild_server",
        "restore_snapshot",
        "start_server",
        "stop_server",
        "terminate_instance",
        "upgrade_instance",
        "upgrade_server",
        "upgrade_to_managed",
    }
)

_SANDBOX_NOTE = "SANDBOX: a fake Hostwinds Cloud API serving made-up data; this is not Hostwinds"
_SANDBOX_HEADER = (b"x-sandbox", b"hostwinds")
_PLAN_META = ("managed", "drive_type")
_INVALID_ACTION = "Invalid Action."
_INVALID_SERVICE = "A valid serviceid is required."
_AUTH_ERROR = [{"result": "error", "action": "Authorization", "message": "Not Authorized!", "ERROR": "6734"}]
_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Error</title></head><body>"
    b"<h1>Something went wrong</h1><p>Please try again later.</p>"
    b"<!-- cost-sync SANDBOX: injected HTML error page --></body></html>\n"
)
_503_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head><body>"
    b"<h1>503 Service Unavailable</h1>"
    b"<!-- cost-sync SANDBOX: injected 503 --></body></html>\n"
)
_JSON = "application/json"


# ----------------------------------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------------------------------


class _SandboxHeader:
    """ASGI wrapper adding ``X-Sandbox: hostwinds`` to every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), _SANDBOX_HEADER]}
            await send(message)

        await self.app(scope, receive, send_labelled)


class SandboxServer:
    """The SANDBOX Hostwinds Cloud API on a real socket; an async context manager."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self.faults: Faults = faults if faults is not None else Faults()
        #: action -> API requests received (faulted, refused and unauthorised ones included).
        self.requests: collections.Counter[str] = collections.Counter()
        self._server: AppServer | None = None
        self._handlers: dict[str, Callable[[dict[str, str]], Response]] = {
            "get_instances": self._get_instances,
            "get_instance": self._get_instance,
            "get_price_list": self._get_price_list,
            "get_billingcycle_prices": self._get_billingcycle_prices,
            "check_upgrade_order": self._check_upgrade_order,
        }
        self.fleet = fleet
        self.app: ASGIApp = _SandboxHeader(
            Starlette(
                routes=[
                    Route(API_PATH, self._api, methods=["POST"]),
                    Route("/", self._api, methods=["POST"]),
                    Route("/_sandbox/faults", self._control_faults, methods=["GET", "POST", "DELETE"]),
                    Route("/_sandbox/requests", self._control_requests, methods=["GET", "DELETE"]),
                ]
            )
        )

    def __repr__(self) -> str:
        where = self.url if self._server is not None else f"{self._host}:{self._port} (not started)"
        return f"SandboxServer({where}, {self._fleet!r})"

    @property
    def fleet(self) -> Fleet:
        """The fleet being served; assigning a new one takes effect on the next request."""
        return self._fleet

    @fleet.setter
    def fleet(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._by_serviceid: dict[int, dict[str, Any]] = {}
        for instance in fleet.instances:
            serviceid = int_id(instance.get("serviceid"))
            if serviceid is not None:
                self._by_serviceid[serviceid] = instance
        self._bodies: dict[tuple[str, ...], bytes] = {}

    @property
    def port(self) -> int:
        """The port listened on (the real one when constructed with port 0); valid after start()."""
        if self._server is None:
            raise RuntimeError("the sandbox server is not started")
        return self._server.port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server, for the ``/_sandbox/...`` control endpoints."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API endpoint, e.g. ``http://127.0.0.1:43123/cloud/api.php``; valid after start()."""
        return self.base_url + API_PATH

    async def start(self) -> None:
        """Bind, start serving, and return once connections are accepted."""
        if self._server is not None:
            raise RuntimeError("the sandbox server is already started")
        try:
            server = AppServer(self.app, host=self._host, port=self._port, name="sandbox-hostwinds")
        except OSError as exc:
            raise OSError(exc.errno, f"sandbox: {exc.strerror}") from None
        await server.start()
        self._server = server
        _log.info(
            "sandbox.started",
            url=self.url,
            instances=len(self._fleet.instances),
            plans=len(self._fleet.plans),
            container=self._fleet.container,
            note=_SANDBOX_NOTE,
        )

    async def stop(self) -> None:
        """Stop accepting, finish what is in flight (2 s at most), and release the port."""
        server, self._server = self._server, None
        if server is not None:
            url = server.base_url + API_PATH
            await server.stop()
            _log.info("sandbox.stopped", url=url)

    async def wait(self) -> None:
        """Wait until the server stops (stop() from elsewhere, or a crash, which is raised)."""
        if self._server is None:
            raise RuntimeError("the sandbox server is not started")
        await self._server.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the API endpoint ------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        form = form_fields(await request.body())
        action = form.get("action", "")
        self.requests[action] += 1
        if "API" in request.query_params:
            _log.warning(
                "sandbox.key_in_url", action=action, note="the API key belongs in the form body only"
            )
        if action in WRITE_ACTIONS:
            _log.warning(
                "sandbox.write_action_refused",
                action=action,
                count=self.requests[action],
                note="sandbox: write action refused; cost-sync must never send a write action",
            )
        faulted = await self._apply_faults(action)
        if faulted is not None:
            return faulted
        if not hmac.compare_digest(form.get("API", "").encode(), self._fleet.api_key.encode()):
            _log.info("sandbox.not_authorized", action=action)
            return self._auth_error()
        handler = self._handlers.get(action)
        if handler is None:
            return self._error(action, _INVALID_ACTION)
        return handler(form)

    async def _apply_faults(self, action: str) -> Response | None:
        faults = self.faults
        if not faults.applies_to(action):
            return None
        if faults.latency_seconds > 0:
            await asyncio.sleep(faults.latency_seconds)
            faults = self.faults  # it may have changed while this request slept
        if faults.fail_next > 0:
            faults.fail_next -= 1
            _log.info("sandbox.fault", kind="http_503", action=action, left=faults.fail_next)
            return Response(_503_PAGE, status_code=503, media_type="text/html")
        if faults.rate_limit_next > 0:
            faults.rate_limit_next -= 1
            _log.info("sandbox.fault", kind="http_429", action=action, left=faults.rate_limit_next)
            return Response(
                b"Too Many Requests (sandbox)\n",
                status_code=429,
                media_type="text/plain",
                headers={"Retry-After": str(faults.retry_after)},
            )
        if faults.html_next > 0:
            faults.html_next -= 1
            _log.info("sandbox.fault", kind="html_200", action=action, left=faults.html_next)
            return Response(_HTML_PAGE, status_code=200, media_type="text/html")
        if faults.auth_error:
            _log.info("sandbox.fault", kind="auth_error", action=action)
            return self._auth_error()
        return None

    def _error(self, action: str, message: str) -> Response:
        """An error envelope in the fleet's error form."""
        if self._fleet.error_form == "object":
            return _json_response({"result": "error", "action": action, "message": message}, status_code=400)
        return _error(action, message)

    def _auth_error(self) -> Response:
        if self._fleet.error_form == "object":
            return _json_response(_AUTH_ERROR[0], status_code=401)
        return _json_response(_AUTH_ERROR)

    def _get_instances(self, form: dict[str, str]) -> Response:
        key = ("get_instances",)
        body = self._bodies.get(key)
        if body is None:
            fleet = self._fleet
            body = _dumps(_contain(fleet.container, fleet.instances, "serviceid"))
            self._bodies[key] = body
        return Response(body, media_type=_JSON)

    def _get_instance(self, form: dict[str, str]) -> Response:
        serviceid = int_id(form.get("serviceid"))
        instance = None if serviceid is None else self._by_serviceid.get(serviceid)
        if instance is None:
            return self._error("get_instance", _INVALID_SERVICE)
        return _json_response({"success": instance})

    def _get_price_list(self, form: dict[str, str]) -> Response:
        managed = _flag(form.get("managed"), default=True)
        drive_type = (form.get("drive_type") or "ssd").strip().lower()
        key = ("get_price_list", "1" if managed else "0", drive_type)
        body = self._bodies.get(key)
        if body is None:
            rows = [
                {name: value for name, value in plan.items() if name not in _PLAN_META}
                for plan in self._fleet.plans
                if bool(plan.get("managed", False)) == managed
                and str(plan.get("drive_type", "ssd")).strip().lower() == drive_type
            ]
            if self._fleet.price_list_shape == "openapi":
                body = _dumps({"success": _openapi_rows(rows)})
            else:
                body = _dumps(_contain(self._fleet.container, rows, "id"))
            if len(self._bodies) < 64:  # drive_type is client-chosen: keep the cache bounded
                self._bodies[key] = body
        return Response(body, media_type=_JSON)

    def _get_billingcycle_prices(self, form: dict[str, str]) -> Response:
        serviceid = int_id(form.get("serviceid"))
        if serviceid is None or serviceid not in self._by_serviceid:
            return self._error("get_billingcycle_prices", _INVALID_SERVICE)
        shape = self._fleet.cycle_prices_shape
        message = self._fleet.cycle_price_errors.get(serviceid)
        if message is None and shape in ("error", "invalid_action"):
            message = _INVALID_SERVICE if shape == "error" else _INVALID_ACTION
        if message is not None:
            return self._error("get_billingcycle_prices", message)
        if shape == "empty":
            return _json_response({})
        return _json_response({"success": self._fleet.cycle_prices.get(serviceid, {})})

    def _check_upgrade_order(self, form: dict[str, str]) -> Response:
        return _json_response({"success": []})

    # -- control endpoints -----------------------------------------------------------------------

    async def _control_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults = Faults()
        elif request.method == "POST":
            try:
                changes = json.loads(await request.body())
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of Faults fields")
                self.faults = self.faults.updated(changes)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                return _json_response({"error": str(exc)}, status_code=400)
            _log.info("sandbox.faults_set", **self.faults.to_json())
        return _json_response(self.faults.to_json())

    async def _control_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests.clear()
        return _json_response(dict(self.requests))


async def serve(fleet: Fleet, *, host: str, port: int, faults: Faults | None = None) -> None:
    """Serve the SANDBOX API on ``host:port`` until cancelled; a taken port raises OSError naming it."""
    server = SandboxServer(fleet, host=host, port=port, faults=faults)
    await server.start()
    try:
        await server.wait()
    finally:
        await server.stop()


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _flag(value: str | None, *, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def _contain(container: Container, items: list[dict[str, Any]], key: str) -> Any:
    """``items`` in the fleet's container shape."""
    if container == "bare":
        return items
    if container == "object":
        return {"success": {str(item.get(key, index)): item for index, item in enumerate(items)}}
    return {"success": items}


_CYCLE_NAMES = ("monthly", "quarterly", "semiannually", "annually", "biennially", "triennially")
_RESOURCES = ("ram", "cpu", "disk", "bandwidth")


def _openapi_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Price-list rows as the OpenAPI description shapes them, keyed by resource id, plus one
    custom plan priced only through ``pricing`` resource options (six of them)."""
    shaped: dict[str, Any] = {}
    for row in rows:
        if "pricing" in row:  # a fleet's own custom plan: served as written
            shaped[str(row.get("rid", row.get("id")))] = row
            continue
        cycles = {c: row[c] for c in _CYCLE_NAMES if isinstance(row.get(c), str)}
        shaped[str(row.get("rid", row.get("id")))] = {
            **row,
            "promo": {"monthly": {"discount": Decimal("1.5"), "pctoff": "15%", "code": "SANDBOX15"}},
            "cycles": cycles,
            "firsts": {name: str(row.get(name, "")) for name in _RESOURCES},
        }
    if not any(str(row.get("id")) == str(CUSTOM_PLAN_ID) for row in rows):
        shaped[str(CUSTOM_PLAN_ID + 900)] = custom_plan_row()
    return shaped


def custom_plan_row() -> dict[str, Any]:
    """The custom plan of the ``openapi`` price-list shape: ``"0.00"`` cycles, prices in options."""
    options = {
        "ram": [(11, "1 GB", "2.00"), (12, "2 GB", "4.00")],
        "cpu": [(21, "1 vCPU", "3.00"), (22, "2 vCPU", "6.00")],
        "disk": [(31, "50 GB", "1.50")],
        "bandwidth": [(41, "1 TB", "0.50")],
    }
    pricing = {
        resource: {
            "id": index + 1,
            "options": {
                str(oid): {
                    "id": oid,
                    "name": name,
                    **{c: _cycle_total(monthly, c) for c in _CYCLE_NAMES},
                    "value": name.split()[0],
                }
                for oid, name, monthly in entries
            },
        }
        for index, (resource, entries) in enumerate(options.items())
    }
    return {
        "id": CUSTOM_PLAN_ID,
        "rid": CUSTOM_PLAN_ID + 900,
        "name": "Custom VPS (sandbox)",
        **{c: "0.00" for c in _CYCLE_NAMES},
        "mysort": 99,
        "current": 0,
        "promo": {},
        "percent": 0,
        "mtotal": "0.00",
        "cycles": {},
        "firsts": {},
        "resource": "custom",
        "pricing": pricing,
    }


def _cycle_total(monthly: str, cycle: str) -> str:
    months = {"monthly": 1, "quarterly": 3, "semiannually": 6, "annually": 12, "biennially": 24}
    return str(Decimal(monthly) * months.get(cycle, 36))


def _error(action: str, message: str) -> Response:
    return _json_response([{"result": "error", "action": action, "message": message}])


def _json_response(value: Any, *, status_code: int = 200) -> Response:
    return Response(_dumps(value), status_code=status_code, media_type=_JSON)


_NUMBER_MARK = "\x00sandbox-number:"
_NUMBER_PLACEHOLDER = re.compile(r'"\\u0000sandbox-number:([^"\\]*)"')


def _dumps(value: Any) -> bytes:
    """Compact JSON; a Decimal (a JSON/TOML number read from a fleet) keeps its exact digits."""
    decimals = False

    def default(obj: object) -> Any:
        nonlocal decimals
        if isinstance(obj, Decimal):
            decimals = True
            return f"{_NUMBER_MARK}{obj}"
        if isinstance(obj, datetime | date | time):  # TOML dates and times
            return obj.isoformat()
        if isinstance(obj, frozenset | set):
            return sorted(obj)
        raise TypeError(f"cannot serialise {type(obj).__name__}")

    text = json.dumps(value, default=default, separators=(",", ":"))
    if decimals:
        text = _NUMBER_PLACEHOLDER.sub(lambda m: m.group(1), text)
    return text.encode()
