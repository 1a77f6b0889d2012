"""Pure run decisions: fingerprints, spread staleness and what a run asks Hostwinds."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cost_sync.domain import matching
from cost_sync.domain.fingerprint import fingerprint, same_fingerprint
from cost_sync.domain.matching import plan_asks, refresh_due
from cost_sync.domain.models import AskReason, Cycle, Instance, Observation, Plan, parse_instance
from cost_sync.domain.pricing import UNREADABLE_CELL, cacheable_cell, parse_price_cell

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
DAY = 86400.0


def inst(serviceid: int = 1, **fields: object) -> Instance:
    """An instance on plan 101, monthly, ssd, unless told otherwise."""
    data: dict[str, object] = {
        "serviceid": serviceid,
        "product_id": 101,
        "billingcycle": "Monthly",
        "hourly": 0,
        "disk_type": "ssd",
    }
    return parse_instance({**data, **fields})


def observed(serviceid: int, at: datetime, instance: Instance | None = None) -> Observation:
    """An observation of ``serviceid`` made at ``at`` with the instance's fingerprint."""
    return Observation(
        serviceid=serviceid,
        prices={},
        fingerprint=fingerprint(instance or inst(serviceid), managed=False),
        observed_at=at,
        run_id=uuid.uuid4(),
    )


@pytest.mark.parametrize(
    "change",
    [{"product_id": 102}, {"billingcycle": "Annually"}, {"hourly": 1}, {"disk_type": "nvme"}],
    ids=["product_id", "billingcycle", "hourly", "disk_type"],
)
def test_each_fingerprint_field_changes_the_fingerprint(change: dict[str, object]) -> None:
    """A change of plan, cycle, hourly flag or disk type makes another fingerprint."""
    assert fingerprint(inst(**change), managed=False) != fingerprint(inst(), managed=False)


def test_managed_setting_changes_the_fingerprint_and_names_do_not() -> None:
    """The managed setting is part of the fingerprint; the product name and status are not."""
    assert fingerprint(inst(), managed=True) != fingerprint(inst(), managed=False)
    renamed = inst(product_name="renamed", status="SUSPENDED")
    assert fingerprint(renamed, managed=False) == fingerprint(inst(), managed=False)


@given(
    serviceid=st.integers(min_value=1, max_value=10**9),
    age=st.floats(min_value=0, max_value=5 * DAY, allow_nan=False),
)
def test_no_observation_outlives_the_max_age(serviceid: int, age: float) -> None:
    """Whatever the service, an observation at least max age old is stale."""
    if age >= DAY:
        assert refresh_due(T0, T0 + timedelta(seconds=age), max_age_seconds=DAY, serviceid=serviceid)


@given(serviceid=st.integers(min_value=1, max_value=10**9))
def test_a_fresh_observation_is_not_stale(serviceid: int) -> None:
    """An observation made this instant is never stale."""
    assert not refresh_due(T0, T0, max_age_seconds=DAY, serviceid=serviceid)


def test_a_fleet_observed_at_once_comes_due_spread_over_the_max_age() -> None:
    """1,000 services observed together come due over 24 hourly runs, each once, none over 1.5 x N / 24."""
    n = 1000
    due_at: Counter[int] = Counter()
    for serviceid in range(100_001, 100_001 + n):
        hour = next(
            h
            for h in range(1, 25)
            if refresh_due(T0, T0 + timedelta(hours=h), max_age_seconds=DAY, serviceid=serviceid)
        )
        due_at[hour] += 1
    assert sum(due_at.values()) == n
    assert max(due_at.values()) <= 1.5 * n / 24


def test_plan_asks_names_the_reason_of_each_ask() -> None:
    """New, changed and stale services are asked with their reason; a fresh unchanged one is a hit."""
    wanted = {1: inst(1), 2: inst(2, product_id=102), 3: inst(3), 4: inst(4)}
    observations = {
        2: observed(2, T0),  # observed on plan 101
        3: observed(3, T0 - timedelta(days=2)),
        4: observed(4, T0),
    }
    plan = plan_asks(wanted, observations, now=T0, max_age_seconds=DAY, managed=False)
    assert plan.asks == {1: AskReason.NEW, 2: AskReason.CHANGED, 3: AskReason.STALE}
    assert set(plan.hits) == {4}
    forced = plan_asks(wanted, observations, now=T0, max_age_seconds=DAY, managed=False, full=True)
    assert set(forced.asks.values()) == {AskReason.FORCED}
    assert forced.hits == {}


@pytest.mark.parametrize(
    ("cell", "kept"),
    [("9.99", "9.99"), ("", ""), ("-1.00", "-1.00"), ("1e3", "1e3"), ('{"rootpass": "x"}', UNREADABLE_CELL)],
)
def test_cache_keeps_numbers_and_blanks_and_nothing_else(cell: str, kept: str) -> None:
    """Numbers and blanks are cached as sent; other text becomes a marker that still parses as invalid."""
    assert cacheable_cell(cell) == kept
    if kept == UNREADABLE_CELL:
        assert parse_price_cell(kept) == parse_price_cell(cell)


@pytest.mark.parametrize(
    ("product_name", "plan_name", "expected"),
    [
        ("Unmanaged Linux VPS 1 CPU / 2 GB", "unmanaged linux vps 1 cpu / 2 gb", True),
        ("Unmanaged Linux VPS 1CPU/2GB", " Unmanaged  Linux VPS 1 CPU / 2 GB\t", True),
        ("Unmanaged Linux VPS 1 CPU / 2 GB", "Unmanaged Linux VPS 2 CPU / 4 GB", False),
        (None, "Unmanaged Linux VPS 1 CPU / 2 GB", None),
        ("Unmanaged Linux VPS 1 CPU / 2 GB", None, None),
    ],
)
def test_plan_names_compare_ignoring_case_and_whitespace(
    product_name: str | None, plan_name: str | None, expected: bool | None
) -> None:
    """Names agree when equal up to case and whitespace; a missing name compares as unknown."""
    assert matching.plan_names_agree(product_name, plan_name) is expected


def test_check_plan_names_counts_each_joined_instance_and_lists_distinct_disagreements() -> None:
    """Agreements and disagreements are counted per instance; unjoined instances are not counted."""
    plans = {
        101: Plan(id=101, rid=51, name="Plan A"),
        102: Plan(id=102, rid=52, name="Plan B"),
    }
    lists = {(False, "ssd"): plans}

    def inst(serviceid: int, product_id: int | None, name: str | None) -> Instance:
        return parse_instance(
            {"serviceid": serviceid, "product_id": product_id, "product_name": name, "disk_type": "ssd"}
        )

    check = matching.check_plan_names(
        [
            inst(1, 101, "plan a"),
            inst(2, 102, "Plan A"),
            inst(3, 102, "Plan A"),
            inst(4, 999, "Plan Z"),
            inst(5, None, "Plan A"),
            inst(6, 101, None),
        ],
        lists,
        managed=False,
    )
    assert check.counts() == {"agree": 1, "disagree": 2}
    assert check.disagreements == ((102, "Plan A", "Plan B"),)


@pytest.mark.parametrize("ahead", [timedelta(seconds=1), timedelta(days=365)])
def test_an_observation_dated_in_the_future_is_stale(ahead: timedelta) -> None:
    """A clock that ran ahead dated it: its age is unknown, so it is asked again at once."""
    assert refresh_due(T0 + ahead, T0, max_age_seconds=DAY, serviceid=1234567)


def test_a_serviceid_on_another_server_is_another_fingerprint() -> None:
    """Hostwinds reuses a serviceid for another server: the old server's cached answer is not reused."""
    old = inst(server_uuid="738bab29-512f-442b-b385-bcde95321dfe")
    new = inst(server_uuid="0b3a6f0e-7f0c-4a8e-9a55-2d1f3c4b5a69")
    cached = fingerprint(old, managed=False)
    assert not same_fingerprint(cached, new, managed=False)
    # Second way: the same server spelled in upper case with spaces is the same server.
    spelled = inst(server_uuid=" 738BAB29-512F-442B-B385-BCDE95321DFE ")
    assert same_fingerprint(cached, spelled, managed=False)
    # A fingerprint cached before the server_uuid was part of it: the other fields decide.
    legacy = cached.partition(";server_uuid=")[0]
    assert same_fingerprint(legacy, new, managed=False)
    assert not same_fingerprint(legacy, inst(product_id=102), managed=False)


def test_the_one_plan_lookup_joins_in_the_list_of_the_instances_options() -> None:
    """An instance joins to the row of its product_id in the list asked with its managed flag and
    disk type, never in another list; no product_id or no such list joins nothing."""

    ssd = {101: Plan(id=101, prices={Cycle.MONTHLY: "5.00"})}
    nvme = {101: Plan(id=101, prices={Cycle.MONTHLY: "9.00"})}
    lists = {(False, "ssd"): ssd, (True, "nvme"): nvme}
    assert matching.joined_plan(inst(disk_type="ssd"), lists, managed=False) is ssd[101]
    assert matching.joined_plan(inst(disk_type="nvme"), lists, managed=False) is None
    assert matching.joined_plan(inst(disk_type="nvme"), lists, managed=True) is nvme[101]
    assert matching.joined_plan(inst(product_id=None), lists, managed=False) is None
    assert matching.plan_of(inst(product_id=102), ssd) is None
    assert matching.plan_of(inst(), None) is None


def test_one_resolver_names_rows_by_id_instance_id_serviceid_or_uuid() -> None:
    """RowIndex is what --instance, POST /resync, explain, approve and quote resolve through."""
    a, b, c = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)
    shared = "5b3e0c1e-0000-4000-8000-000000000009"
    instances = [
        inst(7, server_uuid="AAAA-1"),
        inst(8, server_uuid=shared),
        inst(9, server_uuid=shared.upper()),
    ]
    rows = matching.identify(
        [(a, " 7 ", "active"), (b, "aaaa-1", "decommissioned"), (c, "8", "active")], instances
    )
    index = matching.RowIndex(rows)
    assert [r.id for r in index.named(str(a).upper())] == [a]
    # Both rows match service 7 (a by serviceid, b by its uuid): naming the instance names both.
    assert [r.id for r in index.named("7")] == [a, b]
    assert [r.id for r in index.named(" AAAA-1 ")] == [a, b]
    assert index.named(shared) == []  # a uuid two services carry names neither
    assert [r.id for r in index.named("8")] == [c]
    assert index.named("1" * 5000) == []
    chosen, problems = index.resolve(["aaaa-1", "nope"], statuses=["active"])
    assert chosen == {a}
    assert problems == {"nope": "matches no vps_instances row"}
    _, problems = index.resolve([str(b)], statuses=["active"])
    assert problems == {str(b): f"row {b} has status 'decommissioned', which is not in scope"}
