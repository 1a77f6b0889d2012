"""Reading Hostwinds' JSON answers into cost-sync's models, row by row.

Every JSON number is parsed as ``Decimal``; an object naming a key twice with different values
is :class:`Ambiguous` and refused where it matters; each instance object becomes an
:class:`~cost_sync.domain.models.Instance` as it is parsed (passwords never kept); a price list is
read row by row, an unreadable row listed, not fatal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

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
)
from cost_sync.domain.pricing import bounded_cell
from cost_sync.domain.redact import (
    redact,
)
from cost_sync.errors import (
    HostwindsResponseError,
)
from cost_sync.hostwinds.sanitise import clean_text, kept_fields

__all__ = [
    "INSTANCE_ACTIONS",
    "MESSAGE_MAX",
    "NO_SERVICE",
    "Ambiguous",
    "PlanKey",
    "answer_items",
    "is_auth_error",
    "is_error_envelope",
    "json_kind",
    "loads",
    "price_cell_text",
    "read_cycle_prices",
    "read_instance",
    "read_instances",
    "read_price_list",
    "unwrap",
]

_log = structlog.get_logger("cost_sync.hostwinds")

MESSAGE_MAX = 200
_CELL_FIELDS = ("price", "total", "amount")
_CYCLES_BY_KEY: dict[str, Cycle] = {c.value: c for c in PRICED_CYCLES}


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


#: Which price-list field an instance's ``product_id`` names (``[hostwinds] plan_key``).
PlanKey = Literal["id", "rid"]


def unwrap(body: Any) -> Any:
    """The answer under ``{"success": ...}``; a body without that wrapper is its own answer."""
    if isinstance(body, Ambiguous) and "success" in body.differing:
        raise HostwindsResponseError("the answer names success twice with different values")
    if isinstance(body, dict) and "success" in body:
        return body["success"]
    return body


def read_instances(answer: Any) -> list[Instance]:
    """The instances of a ``get_instances`` answer (unwrapped), whitelisted; raises on a wrong shape."""
    action = "get_instances"
    items = answer_items(action, answer, single_key="serviceid")
    instances = []
    for index, item in enumerate(items):
        if item is NO_SERVICE:
            continue
        readings = item if isinstance(item, _Readings) else [item]
        instances += [read_instance(action, reading, f"item {index}: ") for reading in readings]
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
                UnreadableRow(
                    None, where, False, f"expected a price-list row or a group, got {json_kind(row)}"
                )
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
            f"{action}: {where}expected an object of cycle prices, got {json_kind(answer)}"
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
                    dead_ends.append(f"{path}.{name}: {json_kind(value)}")
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
                f"{action}: {path}: expected a price-list row or a group, got {json_kind(node)}"
            )

    if answer is None or (isinstance(answer, dict | list) and not answer):
        return []
    walk(answer, "answer", None)
    if not rows:
        stop = dead_ends[0] if dead_ends else "answer: no object with an id and a cycle price"
        raise HostwindsResponseError(f"{action}: no price-list row found; reading stopped at {stop}")
    return rows


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


def loads(body: bytes | bytearray | str, *, instances: bool = False) -> Any:
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
NO_SERVICE = object()


INSTANCE_ACTIONS = frozenset({"get_instances", "get_instance"})


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
            return NO_SERVICE
        # First and last readings: they differ, so the service is priced on neither.
        return _Readings([_instance_hook(obj.first), _instance_hook(dict(obj.items()))])
    return _instance_hook(obj)


def _instance_hook(obj: dict[str, Any]) -> Any:
    # Each instance object becomes an Instance as soon as it is parsed: the root password and
    # configkey are dropped at once, and a 100,000-instance answer never holds every field of
    # every instance in memory at the same time. One that does not validate stays a (whitelisted)
    # dict, so that read_instance() reports it with its position.
    if "serviceid" not in obj:
        return obj
    fields = kept_fields(obj)
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


def is_error_envelope(body: Any) -> bool:
    items = body if isinstance(body, list) else [body]
    return any(isinstance(item, dict) and item.get("result") == "error" for item in items)


def is_auth_error(item: dict[str, Any]) -> bool:
    message = str(item.get("message") or "").strip().lower()
    action = str(item.get("action") or "").strip().lower()
    return message.startswith("not authorized") or action == "authorization"


def json_kind(value: object) -> str:
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


def answer_items(action: str, container: Any, *, single_key: str) -> list[Any]:
    """The items of a list, or the values of an object keyed by id; one bare item as a list of one."""
    if isinstance(container, list):
        return container
    if isinstance(container, Instance):
        return [container]
    if isinstance(container, dict):
        if single_key in container:
            return [container]
        return list(container.values())
    raise HostwindsResponseError(
        f"{action}: expected a list or an object of items, got {json_kind(container)}"
    )


def _validation_summary(exc: ValidationError) -> str:
    """Pydantic's errors as ``loc: msg`` only: the input values (a password!) never appear."""
    parts = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"])
        parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    return "; ".join(parts)[:MESSAGE_MAX]


def read_instance(action: str, item: Any, where: str) -> Instance:
    if isinstance(item, Instance):
        return item
    if not isinstance(item, dict):
        raise HostwindsResponseError(f"{action}: {where}expected an object, got {json_kind(item)}")
    item = kept_fields(item)
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
