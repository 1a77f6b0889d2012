"""A SANDBOX Hostwinds Cloud API: a real HTTP server on 127.0.0.1 serving a made-up fleet.

This is not Hostwinds. It speaks the protocol as the Hostwinds API notes describe it (one
``POST /cloud/api.php`` endpoint, form bodies with ``action`` and ``API``, error envelopes with
HTTP 200, ``{"success": ...}`` answers in the container shape a fleet asks for) so that tests,
``cost-sync demo`` and the benchmark can run the real client over real sockets, with no network
and no real key. Every response carries ``X-Sandbox: hostwinds``, every log line is a
``sandbox.*`` event, and the data comes from a fleet file (``docs/sandbox.md``) or
:func:`generate_fleet`.

What it serves:

- ``get_instances``, ``get_instance``, ``get_price_list`` (filtered by ``managed``, default 1 as
  Hostwinds does, and ``drive_type``, default ``ssd``), ``get_billingcycle_prices`` and
  ``check_upgrade_order``; prices exactly as the fleet wrote them (strings stay strings, numbers
  keep their digits).
- Write actions (``upgrade_instance``, ``change_billing_cycle``...) are refused with
  ``Invalid Action.``, counted, and logged as a warning: cost-sync must never send them.
- :class:`Faults` injects latency, 503 bursts, 200 HTML pages, 429 with ``Retry-After`` and auth
  errors, set in-process (``server.faults``) or from another process via
  ``POST /_sandbox/faults``; ``GET /_sandbox/requests`` returns the per-action request counters.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import json
import math
import random
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, get_args
from urllib.parse import parse_qs

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cost_sync.errors import ConfigError
from cost_sync.runtime.httpserve import AppServer

__all__ = [
    "API_PATH",
    "CUSTOM_PLAN_ID",
    "DEMO_FLEET_PATH",
    "SANDBOX_API_KEY",
    "WRITE_ACTIONS",
    "Container",
    "CyclePricesShape",
    "ErrorForm",
    "Faults",
    "Fleet",
    "FleetFileError",
    "PriceListShape",
    "SandboxServer",
    "custom_plan_row",
    "generate_fleet",
    "load_demo_fleet",
    "load_fleet",
    "serve",
]

_log = structlog.get_logger("cost_sync.sandbox")

#: The path Hostwinds serves its Cloud API on; ``POST /`` is accepted too.
API_PATH = "/cloud/api.php"
#: The key of the demo fleet and of :func:`generate_fleet`: it opens nothing but a sandbox.
SANDBOX_API_KEY = "sandbox-hostwinds-key-not-real"
#: The packaged demo fleet (``cost-sync demo``).
DEMO_FLEET_PATH = Path(__file__).parents[1] / "data" / "demo-fleet.toml"

#: How ``success`` is shaped for ``get_instances`` and ``get_price_list``: a list, an object keyed
#: by id, or a bare list with no ``success`` wrapper.
Container = Literal["list", "object", "bare"]
_CONTAINERS: tuple[str, ...] = get_args(Container)

#: How ``get_billingcycle_prices`` answers. ``cycle_keyed`` (the default) is a GUESS, cost-sync's
#: and PenguinMails': ``{"success": {"monthly": "9.99", ...}}`` from the fleet's ``cycle_prices``.
#: ``empty`` answers ``{}`` for every service, the only success body the public docs show.
#: ``error`` answers every service with the envelope ``A valid serviceid is required.``,
#: ``invalid_action`` with ``Invalid Action.`` (both seen from the real API for other actions).
CyclePricesShape = Literal["cycle_keyed", "empty", "error", "invalid_action"]
_CYCLE_PRICES_SHAPES: tuple[str, ...] = get_args(CyclePricesShape)

#: How ``get_price_list`` rows are shaped. ``flat`` serves the fleet's rows as written;
#: ``openapi`` serves them as the most detailed public description has them (an object keyed by
#: resource id; ``promo`` and ``cycles`` objects keyed by cycle, ``firsts`` an object) and adds one
#: custom plan (:data:`CUSTOM_PLAN_ID`) whose row-level cycles are ``"0.00"`` and whose prices are
#: only resource options inside ``pricing``.
PriceListShape = Literal["flat", "openapi"]
_PRICE_LIST_SHAPES: tuple[str, ...] = get_args(PriceListShape)

#: How error envelopes are sent: ``list`` (HTTP 200, a list of one, as working clients saw) or
#: ``object`` (one object, HTTP 400, or 401 for the auth error, as the OpenAPI description has it).
ErrorForm = Literal["list", "object"]
_ERROR_FORMS: tuple[str, ...] = get_args(ErrorForm)

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


class FleetFileError(ConfigError, ValueError):
    """A fleet file could not be read: the message names the file and the line or the entry.

    A :class:`~cost_sync.errors.ConfigError` (exit code 2), and still a ``ValueError`` for callers
    that parse fleets without the rest of cost-sync.
    """


# ----------------------------------------------------------------------------------------------
# The fleet
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Fleet:
    """What the sandbox serves: one account's key, raw instances, plan rows and per-service prices.

    ``instances`` are raw instance objects as Hostwinds sends them (noise such as ``password``
    included). ``plans`` are raw price-list rows plus two sandbox-only keys that are never sent:
    ``managed`` (bool, default False) and ``drive_type`` (str, default ``"ssd"``), which choose the
    ``get_price_list`` answers a row appears in. ``cycle_prices`` maps a serviceid to the body
    under ``success`` of its ``get_billingcycle_prices`` answer. Treat a fleet as read-only once a
    server serves it (answers are cached); swap ``SandboxServer.fleet`` to change data.
    """

    api_key: str
    instances: list[dict[str, Any]] = field(default_factory=list)
    plans: list[dict[str, Any]] = field(default_factory=list)
    cycle_prices: dict[int, dict[str, Any]] = field(default_factory=dict)
    container: Container = "list"
    cycle_prices_shape: CyclePricesShape = "cycle_keyed"
    price_list_shape: PriceListShape = "flat"
    error_form: ErrorForm = "list"
    #: serviceid -> the error message its get_billingcycle_prices answers instead of prices.
    cycle_price_errors: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.container not in _CONTAINERS:
            raise ValueError(f"container must be one of {', '.join(_CONTAINERS)}, not {self.container!r}")
        if self.cycle_prices_shape not in _CYCLE_PRICES_SHAPES:
            raise ValueError(
                f"cycle_prices_shape must be one of {', '.join(_CYCLE_PRICES_SHAPES)}, "
                f"not {self.cycle_prices_shape!r}"
            )
        if self.price_list_shape not in _PRICE_LIST_SHAPES:
            raise ValueError(
                f"price_list_shape must be one of {', '.join(_PRICE_LIST_SHAPES)}, "
                f"not {self.price_list_shape!r}"
            )
        if self.error_form not in _ERROR_FORMS:
            raise ValueError(f"error_form must be one of {', '.join(_ERROR_FORMS)}, not {self.error_form!r}")

    def __repr__(self) -> str:
        # No key, and no 100,000-instance dump.
        return (
            f"Fleet(instances={len(self.instances)}, plans={len(self.plans)}, "
            f"cycle_prices={len(self.cycle_prices)}, container={self.container!r})"
        )


def load_fleet(path: Path) -> Fleet:
    """Read a fleet from a ``.toml`` or ``.json`` file; any problem raises :class:`FleetFileError`."""
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise FleetFileError(f"{path}: a fleet file must end in .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetFileError(f"{path}: cannot read the fleet file ({exc})") from exc
    data: Any
    if suffix == ".toml":
        try:
            data = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
            raise FleetFileError(f"{path}: line {line or '?'}: invalid TOML: {exc}") from exc
    else:
        try:
            data = json.loads(text, parse_float=Decimal, parse_constant=Decimal)
        except json.JSONDecodeError as exc:
            raise FleetFileError(
                f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
            ) from exc
    try:
        return _fleet_from_data(data)
    except _SchemaError as exc:
        raise FleetFileError(f"{path}: {exc}") from None


def load_demo_fleet() -> Fleet:
    """The packaged SANDBOX demo fleet (about a dozen instances, made-up prices)."""
    return load_fleet(DEMO_FLEET_PATH)


class _SchemaError(Exception):
    """A fleet whose structure is wrong; the message names the offending entry."""


_TOP_LEVEL_KEYS = frozenset(
    {
        "api_key",
        "container",
        "cycle_prices_shape",
        "price_list_shape",
        "error_form",
        "instances",
        "plans",
        "cycle_prices",
        "cycle_price_errors",
    }
)


def _line_from_message(message: str) -> int | None:
    # Python 3.11's TOMLDecodeError has no lineno attribute; its message ends "(at line N, column M)".
    found = re.search(r"at line (\d+)", message)
    return int(found.group(1)) if found else None


def _fleet_from_data(data: Any) -> Fleet:
    """A Fleet from parsed TOML/JSON, its structure checked; values are kept exactly as written."""
    if not isinstance(data, dict):
        raise _SchemaError("the top level must be a table/object")
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise _SchemaError(f"unknown top-level key(s): {', '.join(unknown)}")
    api_key = data.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        raise _SchemaError("api_key: a non-empty string is required")
    container = data.get("container", "list")
    if container not in _CONTAINERS:
        raise _SchemaError(f"container: must be one of {', '.join(_CONTAINERS)}, not {container!r}")
    shape = data.get("cycle_prices_shape", "cycle_keyed")
    if shape not in _CYCLE_PRICES_SHAPES:
        raise _SchemaError(
            f"cycle_prices_shape: must be one of {', '.join(_CYCLE_PRICES_SHAPES)}, not {shape!r}"
        )

    instances = _list_of_tables(data, "instances")
    seen: dict[int, int] = {}
    for index, instance in enumerate(instances):
        serviceid = _int_id(instance.get("serviceid"))
        if serviceid is None:
            raise _SchemaError(f"instances[{index}]: serviceid: an integer (or digit string) is required")
        if serviceid in seen:
            raise _SchemaError(
                f"instances[{index}] (serviceid {serviceid}): "
                f"the same serviceid as instances[{seen[serviceid]}]"
            )
        seen[serviceid] = index

    plans = _list_of_tables(data, "plans")
    listed: dict[tuple[bool, str, int], int] = {}
    for index, plan in enumerate(plans):
        plan_id = _int_id(plan.get("id"))
        if plan_id is None:
            raise _SchemaError(f"plans[{index}]: id: an integer (or digit string) is required")
        where = f"plans[{index}] (id {plan_id})"
        managed = plan.get("managed", False)
        if not isinstance(managed, bool):
            raise _SchemaError(f"{where}: managed: must be true or false")
        drive_type = plan.get("drive_type", "ssd")
        if not isinstance(drive_type, str) or not drive_type.strip():
            raise _SchemaError(f"{where}: drive_type: must be a non-empty string")
        key = (managed, drive_type.strip().lower(), plan_id)
        if key in listed:
            raise _SchemaError(f"{where}: the same id, managed and drive_type as plans[{listed[key]}]")
        listed[key] = index

    raw_prices = data.get("cycle_prices", {})
    if not isinstance(raw_prices, dict):
        raise _SchemaError("cycle_prices: must be a table/object keyed by serviceid")
    cycle_prices: dict[int, dict[str, Any]] = {}
    for name, body in raw_prices.items():
        serviceid = _int_id(name)
        if serviceid is None:
            raise _SchemaError(f"cycle_prices.{name}: the key must be a serviceid")
        if serviceid not in seen:
            raise _SchemaError(f"cycle_prices.{name}: no instance has serviceid {serviceid}")
        if not isinstance(body, dict):
            raise _SchemaError(f"cycle_prices.{name}: must be a table/object of cycle prices")
        cycle_prices[serviceid] = body
    list_shape = data.get("price_list_shape", "flat")
    if list_shape not in _PRICE_LIST_SHAPES:
        raise _SchemaError(
            f"price_list_shape: must be one of {', '.join(_PRICE_LIST_SHAPES)}, not {list_shape!r}"
        )
    error_form = data.get("error_form", "list")
    if error_form not in _ERROR_FORMS:
        raise _SchemaError(f"error_form: must be one of {', '.join(_ERROR_FORMS)}, not {error_form!r}")
    raw_errors = data.get("cycle_price_errors", {})
    if not isinstance(raw_errors, dict):
        raise _SchemaError("cycle_price_errors: must be a table/object keyed by serviceid")
    errors: dict[int, str] = {}
    for name, message in raw_errors.items():
        serviceid = _int_id(name)
        if serviceid is None or serviceid not in seen:
            raise _SchemaError(f"cycle_price_errors.{name}: no instance has serviceid {name}")
        if not isinstance(message, str):
            raise _SchemaError(f"cycle_price_errors.{name}: must be the error message (a string)")
        errors[serviceid] = message
    return Fleet(
        api_key=api_key,
        instances=instances,
        plans=plans,
        cycle_prices=cycle_prices,
        container=container,
        cycle_prices_shape=shape,
        price_list_shape=list_shape,
        error_form=error_form,
        cycle_price_errors=errors,
    )


def _list_of_tables(data: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    items = data.get(name, [])
    if not isinstance(items, list):
        raise _SchemaError(f"{name}: must be a list of tables/objects")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _SchemaError(f"{name}[{index}]: must be a table/object")
    return items


def _int_id(value: Any) -> int | None:
    """An id as written in a fleet or a request: an int, or a string of ASCII digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return int(text)
    return None


# ----------------------------------------------------------------------------------------------
# A generated fleet, for the benchmark
# ----------------------------------------------------------------------------------------------

# fmt: off
#: (id, name, ram GB, cpu, disk GB, per-cycle totals monthly..triennially, managed, drive_type, rid)
_GENERATED_PLANS: tuple[tuple[int, str, int, int, int, tuple[str, ...], bool, str, int], ...] = (
    (101, "Unmanaged Linux VPS 1 CPU / 1 GB", 1, 1, 30,
     ("4.99", "14.97", "28.74", "53.88", "101.76", "-1.00"), False, "ssd", 51),
    (102, "Unmanaged Linux VPS 1 CPU / 2 GB", 2, 1, 50,
     ("9.99", "29.97", "56.94", "107.88", "203.76", "287.64"), False, "ssd", 52),
    (103, "Unmanaged Linux VPS 2 CPU / 4 GB", 4, 2, 75,
     ("19.99", "59.97", "113.94", "215.88", "407.76", "575.64"), False, "ssd", 53),
    (104, "Unmanaged Linux VPS 4 CPU / 8 GB", 8, 4, 150,
     ("39.99", "119.97", "227.94", "431.88", "-1.00", "-1.00"), False, "ssd", 54),
    (201, "Unmanaged Linux VPS NVMe 2 CPU / 4 GB", 4, 2, 80,
     ("24.99", "74.97", "143.94", "275.88", "527.76", "755.64"), False, "nvme", 61),
    (101, "Managed Linux VPS 1 CPU / 1 GB", 1, 1, 30,
     ("10.99", "32.97", "65.94", "131.88", "-1.00", "-1.00"), True, "ssd", 71),
    (102, "Managed Linux VPS 1 CPU / 2 GB", 2, 1, 50,
     ("15.99", "47.97", "95.94", "191.88", "-1.00", "-1.00"), True, "ssd", 72),
    (103, "Managed Linux VPS 2 CPU / 4 GB", 4, 2, 75,
     ("25.99", "77.97", "155.94", "311.88", "-1.00", "-1.00"), True, "ssd", 73),
    (104, "Managed Linux VPS 4 CPU / 8 GB", 8, 4, 150,
     ("45.99", "137.97", "275.94", "551.88", "-1.00", "-1.00"), True, "ssd", 74),
)
# fmt: on
_CYCLE_KEYS = ("monthly", "quarterly", "semiannually", "annually", "biennially", "triennially")
_CYCLE_MONTHS = (1, 3, 6, 12, 24, 36)
_CYCLE_SPELLINGS = ("Monthly", "Quarterly", "Semi-Annually", "Annually", "Biennially", "Triennially")
_CYCLE_WEIGHTS = (40, 10, 10, 25, 8, 7)
#: The unmanaged plans instances are on (indexes into _GENERATED_PLANS), and how often.
_INSTANCE_PLANS = (0, 1, 2, 3, 4)
_INSTANCE_PLAN_WEIGHTS = (30, 30, 20, 10, 10)
_STATUSES = ("ACTIVE",) * 18 + ("STOPPED", "SUSPENDED")


def _plan_row(spec: tuple[int, str, int, int, int, tuple[str, ...], bool, str, int]) -> dict[str, Any]:
    plan_id, name, ram, cpu, disk, prices, managed, drive_type, rid = spec
    row: dict[str, Any] = {
        "managed": managed,
        "drive_type": drive_type,
        "id": plan_id,
        "name": name,
        "ram": str(ram),
        "cpu": str(cpu),
        "disk": str(disk),
        "bandwidth": str(max(1, ram - ram // 4)),
        **dict(zip(_CYCLE_KEYS, prices, strict=True)),
        "current": 0,
        "promo": {},
        "percent": 0,
        "firsts": [],
        "rid": rid,
        "mtotal": prices[0],
        "cycles": {},
        "resource": None,
    }
    return row


def _cycle_price_variants(prices: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """Per-service answers for one plan, shared by many services: list price, discounted, objects."""
    offered = [
        (key, Decimal(text), months)
        for key, text, months in zip(_CYCLE_KEYS, prices, _CYCLE_MONTHS, strict=True)
        if Decimal(text) > 0
    ]
    as_listed = {key: f"{price:.2f}" for key, price, _ in offered}
    discounted = {
        key: f"{(price * Decimal('0.9') / months).quantize(Decimal('0.01')) * months:.2f}"
        for key, price, months in offered
    }
    as_objects = {key: {"price": f"{price:.2f}", "duedate": "2026-12-01"} for key, price, _ in offered}
    return as_listed, discounted, as_objects


def _instance_plan_text(
    spec: tuple[int, str, int, int, int, tuple[str, ...], bool, str, int],
) -> tuple[int, str, str, str, str, str, str]:
    plan_id, name, ram, cpu, disk, _prices, _managed, drive_type, _rid = spec
    return plan_id, str(plan_id), name, str(ram * 1024), str(cpu), str(disk), drive_type


def _uuid4_text(bits: int) -> str:
    """The text of a version-4 UUID made from 128 random bits (as uuid.uuid4, without os.urandom)."""
    bits = (bits & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def generate_fleet(n: int, *, seed: int = 0) -> Fleet:
    """A deterministic SANDBOX fleet of ``n`` instances (serviceids 100000+i) over a handful of plans."""
    if n < 0:
        raise ValueError("n must not be negative")
    rng = random.Random(seed)
    plans = [_plan_row(spec) for spec in _GENERATED_PLANS]
    # Shared, read-only answers: a third of 100,000 services cost a few dozen dicts, not 33,000.
    variants = {i: _cycle_price_variants(_GENERATED_PLANS[i][5]) for i in _INSTANCE_PLANS}
    plan_picks = rng.choices(_INSTANCE_PLANS, weights=_INSTANCE_PLAN_WEIGHTS, k=n)
    cycle_picks = rng.choices(range(len(_CYCLE_SPELLINGS)), weights=_CYCLE_WEIGHTS, k=n)
    getrandbits = rng.getrandbits
    rand = rng.random
    # Per-plan text shared by every instance on the plan (memory: one string, not n).
    plan_text = {i: _instance_plan_text(_GENERATED_PLANS[i]) for i in _INSTANCE_PLANS}
    instances: list[dict[str, Any]] = []
    cycle_prices: dict[int, dict[str, Any]] = {}
    for i in range(n):
        plan_index = plan_picks[i]
        plan_id, plan_id_text, name, ram, cpu, disk, drive_type = plan_text[plan_index]
        serviceid = 100000 + i
        roll = rand()
        hourly = roll < 0.05
        billingcycle = "Bi-Annually" if 0.05 <= roll < 0.055 else _CYCLE_SPELLINGS[cycle_picks[i]]
        status = _STATUSES[i % len(_STATUSES)]
        as_text = i % 10 == 7  # Hostwinds sometimes sends numbers as strings
        instances.append(
            {
                "serviceid": str(serviceid) if as_text else serviceid,
                "server_uuid": _uuid4_text(getrandbits(128)),
                "product_id": plan_id_text if as_text else plan_id,
                "product_name": name,
                "billingcycle": "Monthly" if hourly else billingcycle,
                "hourly": 1 if hourly else 0,
                "disk_type": drive_type,
                "ram": ram,
                "cpu": cpu,
                "disk": disk,
                "status": status,
                "is_suspended": 1 if status == "SUSPENDED" else 0,
                "upgrade_available": i & 1,
                "location_id": 1 + i % 3,
                "main_ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                "password": f"sandbox-root-{getrandbits(48):012x}",
                "configkey": f"sandbox-cfg-{getrandbits(48):012x}",
            }
        )
        if i % 3 == 0:
            cycle_prices[serviceid] = variants[plan_index][(i // 3) % 3]
    return Fleet(api_key=SANDBOX_API_KEY, instances=instances, plans=plans, cycle_prices=cycle_prices)


# ----------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------


@dataclass
class Faults:
    """Misbehaviour to inject, applied before dispatch in this order: latency, 503, 429, HTML, auth.

    Counters (``*_next``) are consumed one per affected request. When ``actions`` is set, only
    requests for those actions are affected (and consume counters); None means every action.
    """

    latency_seconds: float = 0.0
    fail_next: int = 0
    html_next: int = 0
    auth_error: bool = False
    rate_limit_next: int = 0
    retry_after: int = 1
    actions: frozenset[str] | None = None

    def applies_to(self, action: str) -> bool:
        """True when requests for ``action`` are subject to these faults."""
        return self.actions is None or action in self.actions

    def to_json(self) -> dict[str, Any]:
        """These faults as a JSON object (the control endpoint's answer)."""
        data = dataclasses.asdict(self)
        data["actions"] = None if self.actions is None else sorted(self.actions)
        return data

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` (JSON values) applied; a bad field or value raises ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(
                f"unknown fault field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "latency_seconds":
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise ValueError("latency_seconds must be a number")
                values[name] = _non_negative(name, float(value))  # float-ok: seconds
            elif name == "auth_error":
                if not isinstance(value, bool):
                    raise ValueError("auth_error must be true or false")
                values[name] = value
            elif name == "actions":
                if value is not None and (
                    not isinstance(value, list | tuple | set | frozenset)
                    or not all(isinstance(a, str) for a in value)
                ):
                    raise ValueError("actions must be a list of action names, or null for every action")
                values[name] = None if value is None else frozenset(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} must be an integer")
                values[name] = _non_negative(name, value)
        return dataclasses.replace(self, **values)


def _non_negative(name: str, value: float) -> Any:
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


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
            serviceid = _int_id(instance.get("serviceid"))
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
        form = _parse_form(await request.body())
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
        serviceid = _int_id(form.get("serviceid"))
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
        serviceid = _int_id(form.get("serviceid"))
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


def _parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as one value per name (the first)."""
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


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
