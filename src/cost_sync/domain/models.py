"""Frozen value types that cross module boundaries; no I/O, no behaviour beyond validation.

Money is ``Decimal`` everywhere. Raw price cells from Hostwinds are kept as their exact JSON text
(``PriceCell``) so that :mod:`cost_sync.domain.pricing` alone decides what counts as "not offered",
"invalid" or a price, and can say why.
"""

from __future__ import annotations

import dataclasses
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass as pydantic_dataclass


class Cycle(StrEnum):
    """A Hostwinds billing cycle, by its normalised name."""

    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SEMIANNUALLY = "semiannually"
    ANNUALLY = "annually"
    BIENNIALLY = "biennially"
    TRIENNIALLY = "triennially"
    HOURLY = "hourly"

    @property
    def months(self) -> int:
        """Months one cycle covers; hourly is priced on the monthly ceiling, so 1."""
        return _MONTHS[self]


_MONTHS: dict[Cycle, int] = {
    Cycle.MONTHLY: 1,
    Cycle.QUARTERLY: 3,
    Cycle.SEMIANNUALLY: 6,
    Cycle.ANNUALLY: 12,
    Cycle.BIENNIALLY: 24,
    Cycle.TRIENNIALLY: 36,
    Cycle.HOURLY: 1,
}

#: The cycles a price list or a cycle-price answer can carry a price for (hourly has none).
PRICED_CYCLES: tuple[Cycle, ...] = tuple(c for c in Cycle if c is not Cycle.HOURLY)


class PriceSource(StrEnum):
    """Where an estimate's price came from, in order of precedence."""

    OVERRIDE = "override"
    CYCLE_PRICES = "cycle_prices"
    PRICE_LIST = "price_list"


class Fallback(StrEnum):
    """Why a row was priced from the price list rather than from its service's own cycle prices."""

    #: The service's cycle prices were ``{}``: Hostwinds has no data for it (documented).
    CYCLE_PRICES_EMPTY = "cycle_prices_empty"
    #: Hostwinds answered the service's cycle prices with an error envelope.
    CYCLE_PRICES_ERROR = "cycle_prices_error"
    #: The service's cycle-price answer could not be read.
    CYCLE_PRICES_UNREADABLE = "cycle_prices_unreadable"
    #: The answer has prices, but none (or "not offered") for the instance's cycle.
    CYCLE_MISSING = "cycle_missing"


class UnpricedReason(StrEnum):
    """Why a row in scope got no estimate; its stored value is then left as it was."""

    NO_IDENTIFIER = "no_identifier"
    NOT_FOUND = "not_found"
    UNKNOWN_CYCLE = "unknown_cycle"
    PLAN_NOT_FOUND = "plan_not_found"
    CYCLE_NOT_OFFERED = "cycle_not_offered"
    INVALID_PRICE = "invalid_price"
    OUT_OF_RANGE = "out_of_range"
    #: Hostwinds answered this service's cycle prices with an error or an unreadable body.
    CYCLE_PRICES_UNAVAILABLE = "cycle_prices_unavailable"
    #: The instance's price-list row could not be read (finding ``price_list_row_unreadable``).
    PLAN_UNREADABLE = "plan_unreadable"
    #: The instance's plan is a custom plan the price list prices per service only.
    CUSTOM_PLAN = "custom_plan"
    #: The run's time budget ran out before this service was asked; the next run continues.
    PENDING = "pending"
    #: Hostwinds listed this service id more than once with different data: which one is true?
    DUPLICATE_INSTANCE = "duplicate_instance"


class AskReason(StrEnum):
    """Why a run asks Hostwinds for one service's cycle prices instead of using the cache."""

    NEW = "new"
    CHANGED = "changed"
    STALE = "stale"
    FORCED = "forced"


def override_key(hostwinds_instance_id: str | None) -> str:
    """How a Finance override names a row: its ``hostwinds_instance_id`` trimmed, in lower case."""
    return (hostwinds_instance_id or "").strip().lower()


#: The exact text of one price cell as Hostwinds sent it (a JSON number is kept as its Decimal
#: text, a string as is, an object with no recognised price field as its JSON text).
PriceCell = str


#: The range of a PostgreSQL INTEGER (cost_sync_history.product_id) and of a BIGINT (serviceid).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def storable_text(value: str) -> bool:
    """True when PostgreSQL can store ``value`` as text: no NUL, valid Unicode (no lone surrogate)."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


def _storable_or_none(value: Any) -> Any:
    # A value the database cannot store would fail the run's write, for the whole fleet, on every
    # run: it becomes unknown here instead (and the client logs which field of which instance).
    # One function per field, inlined: it runs for every field of 100,000 instances.
    if isinstance(value, str) and (
        value.strip() == "" or "\x00" in value or (not value.isascii() and not storable_text(value))
    ):
        return None
    return value


def _int32_or_none(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer id, not a boolean")
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        if not text.lstrip("-").isdigit():
            return value  # not an id: pydantic reports it
        value = int(text)
    if isinstance(value, Decimal):
        # A JSON integer too long for int() arrives as a Decimal: compared, never converted.
        if not value.is_finite() or value != value.to_integral_value():
            return value  # not an id: pydantic reports it
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            return None
        value = int(value)
    if isinstance(value, int) and not -INT32_MAX - 1 <= value <= INT32_MAX:
        return None
    return value


def _serviceid(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer id, not a boolean")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, Decimal) and not (value.is_finite() and 0 < value <= INT64_MAX):
        raise ValueError("must be a positive id below 2**63")
    if isinstance(value, int) and not 0 < value <= INT64_MAX:
        raise ValueError("must be a positive id below 2**63")
    return value


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode would read a JSON true as 1: an id is never a boolean.
    if isinstance(value, bool):
        raise ValueError("must be an integer id, not a boolean")
    if isinstance(value, Decimal) and not (value.is_finite() and abs(value) <= INT64_MAX):
        # A JSON integer too long for int(): no id is that long (and it could not be stored).
        raise ValueError("must be an integer id below 2**63")
    return _blank_to_none(value)


def _to_bool(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y"}
    return value


OptStr = Annotated[str | None, BeforeValidator(_blank_to_none)]
OptInt = Annotated[int | None, BeforeValidator(_no_bool)]
Id = Annotated[int, BeforeValidator(_no_bool)]
#: Text from Hostwinds that may be written: unstorable text becomes None.
StoredStr = Annotated[str | None, BeforeValidator(_storable_or_none)]
#: An id written to an INTEGER column: out of range becomes None.
Int32 = Annotated[int | None, BeforeValidator(_int32_or_none)]
ServiceId = Annotated[int, BeforeValidator(_serviceid)]
#: A yes/no field Hostwinds may spell as text ("1", "true", "yes"); unrelated to flags.Flag.
LenientBool = Annotated[bool, BeforeValidator(_to_bool)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)


@pydantic_dataclass(frozen=True, slots=True, config=ConfigDict(extra="ignore", str_strip_whitespace=True))
class Instance:
    """One Hostwinds instance, whitelisted: no password, no configkey, nothing cost-sync ignores.

    A slotted dataclass validated by pydantic rather than a model: a fleet of 100,000 instances
    then takes about a sixth of the memory.
    """

    serviceid: ServiceId
    server_uuid: StoredStr = None
    product_id: Int32 = None
    product_name: StoredStr = None
    billingcycle: StoredStr = None
    hourly: LenientBool = False
    disk_type: StoredStr = None
    status: StoredStr = None
    #: Hostwinds offers this instance a newer plan (``cost-sync report`` lists these).
    upgrade_available: LenientBool = False


_INSTANCE = TypeAdapter(Instance)
#: The fields an Instance keeps; everything else Hostwinds sends is dropped at parse time.
INSTANCE_FIELDS = frozenset(field.name for field in dataclasses.fields(Instance))
_OPTIONAL_FIELDS = tuple(sorted(INSTANCE_FIELDS - {"serviceid", "hourly"}))


_optional_values = operator.attrgetter(*_OPTIONAL_FIELDS)


def dropped_fields(raw: Mapping[str, Any], instance: Instance) -> list[str]:
    """The fields Hostwinds sent a value for that :class:`Instance` could not keep (now None)."""
    if None not in _optional_values(instance):
        return []  # the common case, checked at C speed: 100,000 instances pass through here
    return [
        name
        for name in _OPTIONAL_FIELDS
        if getattr(instance, name) is None and _blank_to_none(raw.get(name)) is not None
    ]


def parse_instance(data: Any) -> Instance:
    """Validate one instance object from Hostwinds (raises pydantic's ValidationError)."""
    return _INSTANCE.validate_python(data)


class Plan(_Frozen):
    """One row of ``get_price_list``: its ``id`` and ``rid`` (either may be what an instance's
    ``product_id`` names, see ``[hostwinds] plan_key``), its name and its per-cycle price cells."""

    id: Id
    rid: OptInt = None
    #: Unstorable text (a NUL, a lone surrogate) becomes None: the name is cached (sql/0008).
    name: StoredStr = None
    prices: Mapping[Cycle, PriceCell] = Field(default_factory=dict)
    #: A custom plan (a ``pricing`` object of resource options): priced per service; a cycle it
    #: has no price for is ``custom_plan``, not ``cycle_not_offered``.
    custom: bool = False


@dataclass(frozen=True, slots=True)
class UnreadableRow:
    """One price-list row the reader skipped: its join key (None when it has none), the path where
    reading stopped, whether it is a custom plan, and why (never a value from the row)."""

    key: int | None
    path: str
    custom: bool
    detail: str

    def describe(self) -> str:
        """One line: which row, where reading stopped, why."""
        kind = "custom plan" if self.custom else "row"
        which = f" {self.key}" if self.key is not None else ""
        return f"{kind}{which} at {self.path}: {self.detail}"


class PriceList(dict[int, Plan]):
    """The plans of one price list keyed by their join key, and the rows that could not be read.

    A ``dict`` so every caller that only needs the plans keeps reading it as one.
    """

    def __init__(
        self, plans: Mapping[int, Plan] | None = None, unreadable: Sequence[UnreadableRow] = ()
    ) -> None:
        super().__init__(plans or {})
        #: Rows skipped (finding ``price_list_row_unreadable``), in answer order.
        self.unreadable: tuple[UnreadableRow, ...] = tuple(unreadable)

    def unreadable_row(self, key: int) -> UnreadableRow | None:
        """The skipped row whose join key is ``key``, if any."""
        return next((u for u in self.unreadable if u.key == key), None)


@dataclass(frozen=True, slots=True)
class Observation:
    """What ``get_billingcycle_prices`` answered for one service, and when, as the cache keeps it.

    ``prices`` holds each cycle's exact price text (empty: Hostwinds had no data for the service);
    ``fingerprint`` is the instance's :func:`cost_sync.domain.fingerprint.fingerprint` when it was asked.
    """

    serviceid: int
    prices: Mapping[Cycle, PriceCell]
    fingerprint: str
    observed_at: datetime
    run_id: uuid.UUID


# The per-row types below are made by cost-sync itself, once per row per run (100,000 at a time):
# frozen slotted dataclasses, not validated models, so a large fleet costs little time and memory.


@dataclass(frozen=True, slots=True)
class VpsRow:
    """One ``vps_instances`` row in scope, as cost-sync reads it."""

    id: uuid.UUID
    hostwinds_instance_id: str | None
    status: str | None
    approximate_cost: Decimal | None
    #: What the last run saw of the row, as :meth:`RowState.key` (None: no run has seen it).
    seen: tuple[object, ...] | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    """A monthly USD estimate and how it was reached."""

    monthly: Decimal
    source: PriceSource
    cycle: Cycle | None = None
    cycle_price: Decimal | None = None
    months: int | None = None
    hourly_ceiling: bool = False
    product_id: int | None = None
    product_name: str | None = None
    #: The instance's own ``billingcycle`` spelling when a ``[hostwinds.cycle_aliases]`` entry
    #: turned it into ``cycle`` (e.g. "Bi-Annually"); None when the spelling named the cycle itself.
    cycle_alias: str | None = None
    #: Why a ``price_list`` estimate did not come from the service's own cycle prices (None: it
    #: did not fall back, or no cycle prices were asked).
    fallback: Fallback | None = None
    #: A price-list estimate for a row with no value while its own cycle prices are still to be
    #: asked (a cold start); a later run refines it.
    provisional: bool = False


@dataclass(frozen=True, slots=True)
class Unpriced:
    """No estimate, with a named reason and a human detail (never a raw body, never a secret)."""

    reason: UnpricedReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """What one run decided for one row in scope."""

    row: VpsRow
    instance: Instance | None
    result: Estimate | Unpriced

    @property
    def changed(self) -> bool:
        """True when the row gets a new stored value."""
        return isinstance(self.result, Estimate) and self.result.monthly != self.row.approximate_cost


@dataclass(frozen=True, slots=True)
class HeldChange:
    """A change a run proposed but did not apply: it exceeded ``[guard] max_change_ratio``."""

    row_id: uuid.UUID
    hostwinds_instance_id: str | None
    old: Decimal | None
    proposed: Estimate
    ratio: Decimal
    reason: str


@dataclass(frozen=True, slots=True)
class RowState:
    """What a run saw of one row: its instance, its plan, why it was unpriced, upgrade offered."""

    row_id: uuid.UUID
    matched: bool
    serviceid: int | None = None
    server_uuid: str | None = None
    product_id: int | None = None
    unpriced_reason: str | None = None
    unpriced_detail: str | None = None
    upgrade_available: bool = False

    #: The fields :meth:`key` compares, in its order (the store reads ``seen`` by these names).
    KEY_FIELDS: ClassVar[tuple[str, ...]] = (
        "matched",
        "serviceid",
        "product_id",
        "unpriced_reason",
        "unpriced_detail",
        "upgrade_available",
    )

    @classmethod
    def of(cls, outcome: RowOutcome) -> RowState:
        """What a run saw of one row, as ``cost_sync_row_state`` keeps it."""
        instance = outcome.instance
        unpriced = outcome.result if isinstance(outcome.result, Unpriced) else None
        return cls(
            row_id=outcome.row.id,
            matched=instance is not None,
            serviceid=instance.serviceid if instance else None,
            server_uuid=instance.server_uuid if instance else None,
            product_id=instance.product_id if instance else None,
            unpriced_reason=unpriced.reason.value if unpriced else None,
            unpriced_detail=unpriced.detail if unpriced else None,
            upgrade_available=bool(instance and instance.upgrade_available),
        )

    def key(self) -> tuple[object, ...]:
        """What a run compares to decide whether the kept state changed (server_uuid follows serviceid):
        the :attr:`KEY_FIELDS`, in their order."""
        key: tuple[object, ...] = _ROW_STATE_KEY(self)
        return key


_ROW_STATE_KEY = operator.attrgetter(*RowState.KEY_FIELDS)


def changed_states(outcomes: Iterable[RowOutcome]) -> list[RowState]:
    """The row states that differ from what the row was last seen as; a row the run did not reach
    (pending) keeps its state."""
    changed = []
    for outcome in outcomes:
        if isinstance(outcome.result, Unpriced) and outcome.result.reason is UnpricedReason.PENDING:
            continue
        state = RowState.of(outcome)
        if outcome.row.seen != state.key():
            changed.append(state)
    return changed


class PriceCacheReport(_Frozen):
    """What the price observation cache did in one run."""

    #: Services priced from a cached observation, without asking Hostwinds.
    hits: int = 0
    #: Services asked for their cycle prices (answered or failed).
    asked: int = 0
    #: Why services were asked: new, changed, stale, forced.
    reasons: dict[str, int] = Field(
        default_factory=lambda: {reason.value: 0 for reason in AskReason},
    )
    #: Asked services whose answer was an error or unreadable (their rows fall back to the price list).
    failed: int = 0
    #: Services the run's time budget did not reach (their rows keep their value).
    pending: int = 0


class RunReport(_Frozen):
    """The outcome of one run, as logged, printed and stored in the run ledger."""

    run_id: uuid.UUID
    trigger: str
    outcome: str
    dry_run: bool = False
    started_at: datetime
    finished_at: datetime
    rows_in_scope: int = 0
    matched: int = 0
    priced_by_source: dict[str, int] = Field(default_factory=dict)
    unchanged: int = 0
    #: Rows whose value differs from the estimate (what a dry run would update).
    changed: int = 0
    updated: int = 0
    unpriced_by_reason: dict[str, int] = Field(default_factory=dict)
    hostwinds_calls: dict[str, int] = Field(default_factory=dict)
    total_before: Decimal = Decimal("0.00")
    total_after: Decimal = Decimal("0.00")
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    instances: list[str] | None = None
    #: Targets that named no row in scope (a daemon run syncs the others), with the reason.
    unknown_instances: dict[str, str] = Field(default_factory=dict)
    price_cache: PriceCacheReport = Field(default_factory=PriceCacheReport)
    #: Changes this run proposed but held for a person ([guard] max_change_ratio).
    held: int = 0
    #: Price-list plans the run's matched instances are on (the next run checks none went missing).
    plans_in_use: list[int] | None = None
    #: Instances whose joined price-list row's name agrees (or not) with their product_name.
    plan_names: dict[str, int] = Field(default_factory=lambda: {"agree": 0, "disagree": 0})
    #: Rows priced with a provisional price-list estimate (no value yet, own prices still to ask).
    provisional: int = 0
    #: Rows in scope that share their Hostwinds instance with another row (each is priced).
    rows_sharing_instance: int = 0
    #: What an operator should look at before trusting the run (swings, duplicates, unused overrides).
    warnings: list[str] = Field(default_factory=list)
    #: The kind of each warning, in the same order (``mostly_unpriced``, ``nothing_matched``...).
    warning_kinds: list[str] = Field(default_factory=list)
    error: str | None = None

    @property
    def duration_seconds(self) -> float:
        """Wall time of the run."""
        return (self.finished_at - self.started_at).total_seconds()
