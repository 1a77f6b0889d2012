"""Price cells and JSON objects at the boundary: bounded, exact, unambiguous; memory that stays flat."""

from __future__ import annotations

import gc
import tracemalloc
from decimal import Decimal

import pytest

from cost_sync.domain.models import Cycle, UnpricedReason
from cost_sync.domain.pricing import (
    MAX_CELL_TEXT,
    TOO_LONG_CELL,
    bounded_cell,
    cacheable_cell,
    parse_price_cell,
)
from cost_sync.errors import HostwindsResponseError
from cost_sync.hostwinds.answers import loads, read_cycle_prices, read_instances, read_price_list, unwrap


@pytest.mark.parametrize(
    ("cell", "kept"),
    [
        ("9.99", "9.99"),
        ("9.990", "9.990"),  # short cells keep their digits exactly
        ("9.99" + "0" * 20_000, "9.99"),
        ("10." + "0" * 100, "10"),
        ("  9.99" + "0" * 50 + "  ", "9.99"),
        ("1" + "0" * 4999, TOO_LONG_CELL),
        ("9.99" + "0" * 20_000 + "1", TOO_LONG_CELL),
        ("9.99" + "0" * 60 + "e2", "9.99e2"),
        ("x" * 100, "x" * MAX_CELL_TEXT),
    ],
)
def test_long_cells_are_normalised_exactly_or_refused(cell: str, kept: str) -> None:
    """A long number loses only trailing zeros (never rounded); one that stays long is refused."""
    assert bounded_cell(cell) == kept
    assert len(cacheable_cell(cell)) <= MAX_CELL_TEXT


def test_a_long_cell_from_an_older_cache_prices_as_the_fresh_answer_would() -> None:
    """A cache written before cells were bounded may hold 9.99 and 20,000 zeros: it prices 9.99,
    with an exponent the database can store."""
    price = parse_price_cell("9.99" + "0" * 20_000)
    assert price == Decimal("9.99")
    assert isinstance(price, Decimal)
    assert price.as_tuple().exponent == -2
    assert parse_price_cell("9.99" + "0" * 20_000 + "1") is UnpricedReason.INVALID_PRICE


def test_memory_stays_flat_whatever_numeric_cells_arrive() -> None:
    """5,000 distinct 50 KB numeric cells (250 MB if the parse cache kept them) leave the
    process holding no more than a few MB (defect 15: the lru_cache on price-cell parsing)."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(5_000):
            cell = f"{n}." + "0" * 50_000
            parse_price_cell(cell)
            parse_price_cell(cacheable_cell(cell))
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 8 * 1024 * 1024


def test_a_5000_digit_integer_is_read_not_refused_as_not_json() -> None:
    """Python's integer-digit limit is not "not JSON": the integer becomes a Decimal."""
    answer = loads('{"success": {"monthly": ' + "1" + "0" * 4999 + ', "annually": 12}}')
    assert answer["success"]["annually"] == 12
    cells = read_cycle_prices(7, answer["success"])
    assert cells[Cycle.MONTHLY] == TOO_LONG_CELL
    assert parse_price_cell(cells[Cycle.MONTHLY]) is UnpricedReason.INVALID_PRICE


def test_duplicate_keys_make_the_object_ambiguous_where_it_matters() -> None:
    """Cycle prices with a key twice fail that service; a plan row with one is left out; the same
    value twice is harmless."""
    answer = loads('{"monthly": "1.00", "monthly": "999.00"}')
    with pytest.raises(HostwindsResponseError, match="monthly twice with different values"):
        read_cycle_prices(7, answer)
    same = loads('{"monthly": "1.00", "monthly": "1.00"}')
    assert read_cycle_prices(7, same) == {Cycle.MONTHLY: "1.00"}
    nested = loads('{"monthly": {"price": "1.00", "price": "2.00"}}')
    with pytest.raises(HostwindsResponseError, match="price twice"):
        read_cycle_prices(7, nested)
    plans = loads('[{"id": 1, "monthly": "1.00", "monthly": "999.00"}, {"id": 2, "monthly": "2.00"}]')
    assert sorted(read_price_list(plans)) == [2]


def test_an_instance_naming_a_field_twice_is_two_readings_that_conflict() -> None:
    """product_id twice, differently: two readings of service 7 (the run prices neither);
    serviceid twice, differently: the object names no service; password twice: harmless."""
    body = (
        '{"success": ['
        '{"serviceid": 7, "product_id": 101, "billingcycle": "Monthly", "product_id": 102},'
        '{"serviceid": 8, "serviceid": 9, "product_id": 101},'
        '{"serviceid": 10, "password": "a", "password": "b"}'
        "]}"
    )
    instances = read_instances(loads(body, instances=True)["success"])
    assert [(i.serviceid, i.product_id) for i in instances] == [(7, 101), (7, 102), (10, None)]


def test_huge_integers_as_ids_are_unknown_or_refused_never_stored() -> None:
    """A 5,000-digit product_id becomes unknown for that instance; a serviceid or a plan id that
    long is refused at parsing, naming the field (no id that long can be stored)."""
    huge = "1" + "0" * 4999
    body = '{"success": [{"serviceid": 7, "product_id": ' + huge + ', "billingcycle": "Monthly"}]}'
    [seven] = read_instances(loads(body, instances=True)["success"])
    assert seven.product_id is None
    with pytest.raises(HostwindsResponseError, match="serviceid"):
        read_instances(loads('{"success": [{"serviceid": ' + huge + "}]}", instances=True)["success"])
    with pytest.raises(HostwindsResponseError, match="id: "):
        read_price_list(loads('[{"id": ' + huge + ', "monthly": "1.00"}]'))


def test_an_envelope_naming_success_twice_is_refused() -> None:
    """{"success": {...}, "success": {...}} says two things: neither is used."""
    body = loads('{"success": {"monthly": "1.00"}, "success": {"monthly": "999.00"}}')
    with pytest.raises(HostwindsResponseError, match="success twice"):
        unwrap(body)
