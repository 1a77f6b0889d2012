"""The sandbox's fleet: what it serves, read from a ``.toml``/``.json`` fleet file (``docs/sandbox.md``)
and checked against its schema with the line of the first mistake."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, get_args

from cost_sync.errors import ConfigError

__all__ = [
    "DEMO_FLEET_PATH",
    "Container",
    "CyclePricesShape",
    "ErrorForm",
    "Fleet",
    "FleetFileError",
    "PriceListShape",
    "load_demo_fleet",
    "load_fleet",
]

#: The packaged demo fleet (``cost-sync demo``).
DEMO_FLEET_PATH = Path(__file__).parents[2] / "data" / "demo-fleet.toml"

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
    instances = _list_of_tables(data, "instances")
    serviceids = _check_instances(instances)
    plans = _list_of_tables(data, "plans")
    _check_plans(plans)
    return Fleet(
        api_key=api_key,
        instances=instances,
        plans=plans,
        cycle_prices=_by_serviceid(data, "cycle_prices", serviceids, dict, "a table/object of cycle prices"),
        container=_choice(data, "container", "list", _CONTAINERS),
        cycle_prices_shape=_choice(data, "cycle_prices_shape", "cycle_keyed", _CYCLE_PRICES_SHAPES),
        price_list_shape=_choice(data, "price_list_shape", "flat", _PRICE_LIST_SHAPES),
        error_form=_choice(data, "error_form", "list", _ERROR_FORMS),
        cycle_price_errors=_by_serviceid(
            data, "cycle_price_errors", serviceids, str, "the error message (a string)"
        ),
    )


def _choice(data: Mapping[str, Any], key: str, default: str, choices: Sequence[str]) -> Any:
    """``data[key]`` (``default`` when absent), which must be one of ``choices``."""
    value = data.get(key, default)
    if value not in choices:
        raise _SchemaError(f"{key}: must be one of {', '.join(choices)}, not {value!r}")
    return value


def _check_instances(instances: Sequence[Mapping[str, Any]]) -> set[int]:
    """Every instance has a serviceid of its own; returns them."""
    seen: dict[int, int] = {}
    for index, instance in enumerate(instances):
        serviceid = int_id(instance.get("serviceid"))
        if serviceid is None:
            raise _SchemaError(f"instances[{index}]: serviceid: an integer (or digit string) is required")
        if serviceid in seen:
            raise _SchemaError(
                f"instances[{index}] (serviceid {serviceid}): "
                f"the same serviceid as instances[{seen[serviceid]}]"
            )
        seen[serviceid] = index
    return set(seen)


def _check_plans(plans: Sequence[Mapping[str, Any]]) -> None:
    """Every plan has an id, and no two plans share id, managed and drive_type."""
    listed: dict[tuple[bool, str, int], int] = {}
    for index, plan in enumerate(plans):
        plan_id = int_id(plan.get("id"))
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


def _by_serviceid(
    data: Mapping[str, Any], key: str, serviceids: set[int], kind: type, what: str
) -> dict[int, Any]:
    """``data[key]``, a table keyed by the serviceid of an instance, each value a ``kind``."""
    raw = data.get(key, {})
    if not isinstance(raw, dict):
        raise _SchemaError(f"{key}: must be a table/object keyed by serviceid")
    found: dict[int, Any] = {}
    for name, value in raw.items():
        serviceid = int_id(name)
        if serviceid is None:
            raise _SchemaError(f"{key}.{name}: the key must be a serviceid")
        if serviceid not in serviceids:
            raise _SchemaError(f"{key}.{name}: no instance has serviceid {serviceid}")
        if not isinstance(value, kind):
            raise _SchemaError(f"{key}.{name}: must be {what}")
        found[serviceid] = value
    return found


def _list_of_tables(data: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    items = data.get(name, [])
    if not isinstance(items, list):
        raise _SchemaError(f"{name}: must be a list of tables/objects")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _SchemaError(f"{name}[{index}]: must be a table/object")
    return items


def int_id(value: Any) -> int | None:
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
