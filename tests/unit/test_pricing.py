"""Unit tests for cost_sync.domain.pricing: cycles, price cells, rounding, matching and precedence."""

from __future__ import annotations

import decimal
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cost_sync.domain.matching import index_instances, match_instance
from cost_sync.domain.models import (
    PRICED_CYCLES,
    Cycle,
    Estimate,
    Instance,
    Plan,
    PriceCell,
    PriceSource,
    Unpriced,
    UnpricedReason,
    VpsRow,
)
from cost_sync.domain.pricing import (
    MAX_MONTHLY,
    estimate_instance,
    monthly_from_cycle,
    normalise_cycle,
    parse_price_cell,
    price_row,
    spelling_key,
)

UUID = "5f0c4c1e-8a6b-4d55-9c1e-2b7d1f3a9e01"

# The price-list row from docs/hostwinds-api.md, with a triennial price added where needed.
PLAN_CELLS: dict[Cycle, PriceCell] = {
    Cycle.MONTHLY: "9.99",
    Cycle.QUARTERLY: "29.97",
    Cycle.SEMIANNUALLY: "56.94",
    Cycle.ANNUALLY: "107.88",
    Cycle.BIENNIALLY: "203.76",
    Cycle.TRIENNIALLY: "-1.00",
}


def make_instance(**fields: Any) -> Instance:
    """Build an instance on plan 101, billed monthly, overriding the given fields."""
    values: dict[str, Any] = {
        "serviceid": 123,
        "server_uuid": UUID,
        "product_id": 101,
        "product_name": "Unmanaged Linux VPS 1 CPU / 2 GB",
        "billingcycle": "Monthly",
    }
    values.update(fields)
    return Instance(**values)


def make_plan(cells: dict[Cycle, PriceCell] | None = None, **fields: Any) -> Plan:
    """Build plan 101 with the given price cells (the documented row by default)."""
    return Plan(id=101, name="Plan 101", prices=PLAN_CELLS if cells is None else cells, **fields)


def make_row(hostwinds_instance_id: str | None = "123") -> VpsRow:
    """Build a vps_instances row pointing at the given Hostwinds id."""
    return VpsRow(
        id=uuid.UUID(int=1),
        hostwinds_instance_id=hostwinds_instance_id,
        status="active",
        approximate_cost=None,
    )


def expect_estimate(result: Estimate | Unpriced) -> Estimate:
    """Return the result as an Estimate, failing the test with the reason otherwise."""
    assert isinstance(result, Estimate), result
    return result


def expect_unpriced(result: Estimate | Unpriced, reason: UnpricedReason) -> Unpriced:
    """Return the result as an Unpriced with the given reason, failing the test otherwise."""
    assert isinstance(result, Unpriced), result
    assert result.reason is reason, result
    return result


# --- normalise_cycle ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "cycle"),
    [
        ("Monthly", Cycle.MONTHLY),
        ("monthly", Cycle.MONTHLY),
        ("Quarterly", Cycle.QUARTERLY),
        ("Semi-Annually", Cycle.SEMIANNUALLY),
        ("semiannually", Cycle.SEMIANNUALLY),
        ("semi_annually", Cycle.SEMIANNUALLY),
        ("Semi Annually", Cycle.SEMIANNUALLY),
        ("Annually", Cycle.ANNUALLY),
        ("  ANNUALLY ", Cycle.ANNUALLY),
        ("Biennially", Cycle.BIENNIALLY),
        ("Triennially", Cycle.TRIENNIALLY),
        ("hourly", Cycle.HOURLY),
        ("Hourly", Cycle.HOURLY),
    ],
)
def test_normalise_cycle_recognises_every_known_spelling(spelling: str, cycle: Cycle) -> None:
    """Each spelling Hostwinds is known to send normalises to its cycle."""
    assert normalise_cycle(spelling) is cycle


@pytest.mark.parametrize("spelling", [None, "Monthly", "Annually", "weekly", ""])
def test_normalise_cycle_hourly_flag_means_hourly(spelling: str | None) -> None:
    """The hourly flag makes the cycle hourly whatever billingcycle says."""
    assert normalise_cycle(spelling, hourly=True) is Cycle.HOURLY


@pytest.mark.parametrize(
    "spelling",
    ["Bi-Annually", "biannually", "weekly", "", "   ", None, "annual", "month", "monthly2", "-"],
)
def test_normalise_cycle_refuses_unknown_or_ambiguous_spellings(spelling: str | None) -> None:
    """An unknown or ambiguous spelling gives None rather than a guessed cycle."""
    assert normalise_cycle(spelling) is None


# --- parse_price_cell ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [None, "", "   ", "-1", "-1.00", " -1.0 ", "0", "0.00", "-0", "0E+2"])
def test_parse_price_cell_reads_not_offered_markers(cell: PriceCell | None) -> None:
    """A missing or empty cell, or any value equal to -1 or 0, means the cycle is not offered."""
    assert parse_price_cell(cell) is UnpricedReason.CYCLE_NOT_OFFERED


@pytest.mark.parametrize(
    "cell",
    [
        "-2",
        "-0.01",
        "-1.01",
        "NaN",
        "nan",
        "sNaN",
        "Infinity",
        "-Infinity",
        "inf",
        "abc",
        "$9.99",
        "9.99 USD",
        "9,99",
        '{"duedate": "x"}',
        "1_000",
        "\u0661\u0662",  # Arabic-Indic digits, which Decimal() alone would accept
        "0x10",
        "1e",
        ".",
        "--1",
        "1e9999999999999999999999",  # an exponent Decimal cannot hold
    ],
)
def test_parse_price_cell_rejects_invalid_text(cell: PriceCell) -> None:
    """Other negatives, NaN, infinities and anything not a plain number are invalid prices."""
    assert parse_price_cell(cell) is UnpricedReason.INVALID_PRICE


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("9.99", "9.99"),
        (" 9.99\n", "9.99"),
        ("9.990", "9.990"),
        ("+9.99", "9.99"),
        ("10", "10"),
        ("1E+2", "1E+2"),
        ("0.001", "0.001"),
        ("1e999999", "1E+999999"),
    ],
)
def test_parse_price_cell_keeps_a_positive_price_exactly_as_written(cell: PriceCell, expected: str) -> None:
    """A positive number (whitespace around it allowed) comes back as that exact Decimal."""
    parsed = parse_price_cell(cell)
    assert isinstance(parsed, Decimal)
    assert str(parsed) == expected


@given(st.text())
def test_parse_price_cell_never_raises_on_arbitrary_text(cell: str) -> None:
    """Any text gives a positive finite Decimal or a reason, never an exception."""
    parsed = parse_price_cell(cell)
    if isinstance(parsed, Decimal):
        assert parsed.is_finite()
        assert parsed > 0
    else:
        assert parsed in (UnpricedReason.CYCLE_NOT_OFFERED, UnpricedReason.INVALID_PRICE)


@given(
    st.one_of(
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.from_regex(r"\A\s*[+-]?[0-9]{0,30}(\.[0-9]{0,30})?([eE][+-]?[0-9]{1,25})?\s*\Z"),
    )
)
def test_parse_price_cell_never_raises_on_number_like_text(cell: str) -> None:
    """Number-like text, including huge exponents and special values, never raises."""
    parsed = parse_price_cell(cell)
    if isinstance(parsed, Decimal):
        assert parsed == Decimal(cell.strip())


# --- monthly_from_cycle -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "months", "monthly"),
    [
        ("9.99", 1, "9.99"),
        ("119.00", 12, "9.92"),
        ("359.64", 36, "9.99"),
        ("29.97", 3, "9.99"),
        ("56.94", 6, "9.49"),
        ("107.88", 12, "8.99"),
        ("203.76", 24, "8.49"),
        ("10.00", 3, "3.33"),
        ("20.00", 3, "6.67"),
        ("0.015", 3, "0.01"),  # exactly half a cent rounds up
        ("0.30", 36, "0.01"),
        ("10", 1, "10.00"),
        # Rounding first to 28 digits would give 0.0150000...; rounding once gives 0.01.
        ("0.01499999999999999999999999999999", 1, "0.01"),
        ("35999999.64", 36, "999999.99"),
        ("36000000.36", 36, "1000000.01"),
    ],
)
def test_monthly_from_cycle_rounds_once_half_up_to_cents(price: str, months: int, monthly: str) -> None:
    """Cycle price / months is rounded once, half-up, to exactly two decimals."""
    result = monthly_from_cycle(Decimal(price), months)
    assert str(result) == monthly


def test_monthly_from_cycle_ignores_the_callers_decimal_context() -> None:
    """A caller's low precision or other rounding mode does not change the result."""
    with decimal.localcontext() as context:
        context.prec = 3
        context.rounding = decimal.ROUND_FLOOR
        assert monthly_from_cycle(Decimal("35999999.64"), 36) == Decimal("999999.99")
        assert monthly_from_cycle(Decimal("0.015"), 3) == Decimal("0.01")


@pytest.mark.parametrize(("price", "months"), [("9.99", 0), ("9.99", -1), ("NaN", 1), ("Inf", 1)])
def test_monthly_from_cycle_rejects_non_prices(price: str, months: int) -> None:
    """Zero months or a non-finite price is a programming error, reported as ValueError."""
    with pytest.raises(ValueError, match="finite price"):
        monthly_from_cycle(Decimal(price), months)


@given(
    price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999.99"), places=2),
    months=st.sampled_from(sorted({c.months for c in PRICED_CYCLES})),
)
def test_monthly_from_cycle_is_within_half_a_cent_per_month(price: Decimal, months: int) -> None:
    """The estimate has exactly two decimals and times months is within half a cent a month."""
    monthly = monthly_from_cycle(price, months)
    assert monthly.as_tuple().exponent == -2
    assert abs(monthly * months - price) <= Decimal("0.005") * months


# --- matching -----------------------------------------------------------------------------------


def _indexed() -> tuple[Instance, Instance, dict[int, Instance], dict[str, Instance]]:
    with_uuid = make_instance()
    without_uuid = make_instance(serviceid=456, server_uuid=None)
    by_serviceid, by_uuid = index_instances([with_uuid, without_uuid])
    return with_uuid, without_uuid, by_serviceid, by_uuid


def test_index_instances_keys_by_serviceid_and_lower_case_uuid() -> None:
    """Both maps are built; uuid keys are lower-cased and instances with no uuid are skipped."""
    upper = make_instance(serviceid=7, server_uuid=UUID.upper())
    no_uuid = make_instance(serviceid=8, server_uuid=None)
    by_serviceid, by_uuid = index_instances([upper, no_uuid])
    assert by_serviceid == {7: upper, 8: no_uuid}
    assert by_uuid == {UUID: upper}


@pytest.mark.parametrize(
    ("hostwinds_instance_id", "expected"),
    [
        ("123", 123),
        (" 123 ", 123),
        ("\t456\n", 456),
        (UUID, 123),
        (UUID.upper(), 123),
        (f"  {UUID.upper()} ", 123),
    ],
)
def test_match_instance_finds_serviceid_digits_and_uuids(hostwinds_instance_id: str, expected: int) -> None:
    """Digits (spaces allowed) match a serviceid; anything else matches a uuid, in any case."""
    _, _, by_serviceid, by_uuid = _indexed()
    found = match_instance(hostwinds_instance_id, by_serviceid=by_serviceid, by_uuid=by_uuid)
    assert found is not None
    assert found.serviceid == expected


@pytest.mark.parametrize(
    "hostwinds_instance_id",
    [None, "", "   ", "999", "not-a-uuid", "\u0661\u0662\u0663", "0" * 5000, "123abc"],
)
def test_match_instance_gives_none_when_nothing_matches(hostwinds_instance_id: str | None) -> None:
    """A blank, unknown or non-ASCII-digit id matches nothing, and never raises."""
    _, _, by_serviceid, by_uuid = _indexed()
    assert match_instance(hostwinds_instance_id, by_serviceid=by_serviceid, by_uuid=by_uuid) is None


# --- estimate_instance: cycles and the price list -----------------------------------------------


@pytest.mark.parametrize(
    ("billingcycle", "cell", "monthly", "cycle"),
    [
        ("Monthly", "9.99", "9.99", Cycle.MONTHLY),
        ("Quarterly", "29.97", "9.99", Cycle.QUARTERLY),
        ("Semi-Annually", "56.94", "9.49", Cycle.SEMIANNUALLY),
        ("semiannually", "56.94", "9.49", Cycle.SEMIANNUALLY),
        ("Annually", "119.00", "9.92", Cycle.ANNUALLY),
        ("Biennially", "203.76", "8.49", Cycle.BIENNIALLY),
        ("Triennially", "359.64", "9.99", Cycle.TRIENNIALLY),
    ],
)
def test_estimate_instance_prices_each_cycle_from_the_price_list(
    billingcycle: str, cell: str, monthly: str, cycle: Cycle
) -> None:
    """The plan's price for the instance's cycle, divided by its months, is the estimate."""
    plan = make_plan({cycle: cell})
    result = expect_estimate(
        estimate_instance(make_instance(billingcycle=billingcycle), cycle_prices=None, plan=plan)
    )
    assert result == Estimate(
        monthly=Decimal(monthly),
        source=PriceSource.PRICE_LIST,
        cycle=cycle,
        cycle_price=Decimal(cell),
        months=cycle.months,
        hourly_ceiling=False,
        product_id=101,
        product_name="Unmanaged Linux VPS 1 CPU / 2 GB",
    )
    assert str(result.monthly) == monthly


@pytest.mark.parametrize(
    "fields",
    [{"billingcycle": "Monthly", "hourly": True}, {"billingcycle": "hourly"}, {"hourly": "1"}],
)
def test_estimate_instance_prices_hourly_at_the_monthly_ceiling(fields: dict[str, Any]) -> None:
    """An hourly instance (flag or spelling) is priced at the plan's monthly price, flagged."""
    result = expect_estimate(estimate_instance(make_instance(**fields), cycle_prices=None, plan=make_plan()))
    assert result.monthly == Decimal("9.99")
    assert result.cycle is Cycle.HOURLY
    assert result.months == 1
    assert result.hourly_ceiling is True


def test_estimate_instance_prices_hourly_from_the_services_monthly_cycle_price() -> None:
    """An hourly instance uses the service's own monthly cycle price when there is one."""
    result = expect_estimate(
        estimate_instance(
            make_instance(hourly=True),
            cycle_prices={Cycle.MONTHLY: "7.50"},
            plan=make_plan(),
        )
    )
    assert (result.monthly, result.source, result.hourly_ceiling) == (
        Decimal("7.50"),
        PriceSource.CYCLE_PRICES,
        True,
    )


@pytest.mark.parametrize("billingcycle", ["Bi-Annually", "weekly", "Free Account"])
def test_estimate_instance_leaves_an_unknown_cycle_unpriced(billingcycle: str) -> None:
    """An unknown cycle is unpriced, naming the raw spelling, even with prices at hand."""
    result = estimate_instance(
        make_instance(billingcycle=billingcycle),
        cycle_prices=dict.fromkeys(PRICED_CYCLES, "9.99"),
        plan=make_plan(),
    )
    assert billingcycle in expect_unpriced(result, UnpricedReason.UNKNOWN_CYCLE).detail


def test_estimate_instance_leaves_a_missing_cycle_unpriced() -> None:
    """An instance with no billingcycle and no hourly flag is unpriced as an unknown cycle."""
    result = estimate_instance(make_instance(billingcycle=None), cycle_prices=None, plan=make_plan())
    expect_unpriced(result, UnpricedReason.UNKNOWN_CYCLE)


@pytest.mark.parametrize("cell", ["-1", "-1.00", "", "0.00", "0", None])
def test_estimate_instance_leaves_a_cycle_the_plan_does_not_offer_unpriced(
    cell: str | None,
) -> None:
    """A plan cell that is -1, empty, zero or missing means the cycle is not offered."""
    cells = dict(PLAN_CELLS)
    if cell is None:
        del cells[Cycle.ANNUALLY]
    else:
        cells[Cycle.ANNUALLY] = cell
    result = estimate_instance(
        make_instance(billingcycle="Annually"), cycle_prices=None, plan=make_plan(cells)
    )
    detail = expect_unpriced(result, UnpricedReason.CYCLE_NOT_OFFERED).detail
    assert "plan 101" in detail
    assert "'annually'" in detail


def test_estimate_instance_names_the_plan_cycle_and_cell_in_the_detail() -> None:
    """The not-offered detail is a short sentence with the plan id, cycle and raw cell."""
    result = estimate_instance(make_instance(billingcycle="Triennially"), cycle_prices=None, plan=make_plan())
    unpriced = expect_unpriced(result, UnpricedReason.CYCLE_NOT_OFFERED)
    assert unpriced.detail == "plan 101 has no 'triennially' price ('-1.00')"


@pytest.mark.parametrize("cell", ["abc", "-5.00", "NaN", '{"duedate": "x"}'])
def test_estimate_instance_leaves_an_invalid_plan_price_unpriced(cell: str) -> None:
    """A plan cell that is not a price is an invalid price, not zero."""
    result = estimate_instance(make_instance(), cycle_prices=None, plan=make_plan({Cycle.MONTHLY: cell}))
    expect_unpriced(result, UnpricedReason.INVALID_PRICE)


@pytest.mark.parametrize(
    ("product_id", "expected_detail"),
    [(101, "no price-list plan 101"), (None, "instance 123 has no product_id")],
)
def test_estimate_instance_without_a_plan_is_plan_not_found(
    product_id: int | None, expected_detail: str
) -> None:
    """With no cycle price and no plan the instance is unpriced, naming its product_id or lack."""
    result = estimate_instance(make_instance(product_id=product_id), cycle_prices=None, plan=None)
    assert expect_unpriced(result, UnpricedReason.PLAN_NOT_FOUND).detail == expected_detail


def test_estimate_instance_falls_back_to_the_plan_name() -> None:
    """product_name comes from the instance, or from the plan when the instance has none."""
    result = expect_estimate(
        estimate_instance(make_instance(product_name=None), cycle_prices=None, plan=make_plan())
    )
    assert result.product_name == "Plan 101"


# --- estimate_instance: precedence between cycle prices and the price list ----------------------


def test_estimate_instance_prefers_the_services_cycle_price_over_the_price_list() -> None:
    """A positive per-service cycle price wins over the plan's price."""
    result = expect_estimate(
        estimate_instance(
            make_instance(billingcycle="Annually"),
            cycle_prices={Cycle.ANNUALLY: "96.00", Cycle.MONTHLY: "9.99"},
            plan=make_plan(),
        )
    )
    assert (result.monthly, result.source, result.cycle_price) == (
        Decimal("8.00"),
        PriceSource.CYCLE_PRICES,
        Decimal("96.00"),
    )


def test_estimate_instance_uses_cycle_prices_even_without_a_plan() -> None:
    """A per-service cycle price is enough when the price list has no plan for the instance."""
    result = expect_estimate(
        estimate_instance(make_instance(), cycle_prices={Cycle.MONTHLY: "4.99"}, plan=None)
    )
    assert (result.monthly, result.source) == (Decimal("4.99"), PriceSource.CYCLE_PRICES)


@pytest.mark.parametrize(
    "cycle_prices",
    [
        None,
        {},
        {Cycle.MONTHLY: "19.99"},  # a price, but for another cycle
        {Cycle.ANNUALLY: "-1"},
        {Cycle.ANNUALLY: "-1.00"},
        {Cycle.ANNUALLY: ""},
        {Cycle.ANNUALLY: "0.00"},
    ],
)
def test_estimate_instance_falls_through_to_the_price_list(
    cycle_prices: dict[Cycle, PriceCell] | None,
) -> None:
    """A missing or not-offered cycle-price cell falls through to the plan's price."""
    result = expect_estimate(
        estimate_instance(make_instance(billingcycle="Annually"), cycle_prices=cycle_prices, plan=make_plan())
    )
    assert (result.monthly, result.source) == (Decimal("8.99"), PriceSource.PRICE_LIST)


@pytest.mark.parametrize("cell", ["abc", "-5", "Infinity", "$96.00"])
def test_estimate_instance_fails_closed_on_an_invalid_cycle_price(cell: str) -> None:
    """An invalid per-service cycle price is unpriced, not replaced by the price list."""
    result = estimate_instance(
        make_instance(billingcycle="Annually"),
        cycle_prices={Cycle.ANNUALLY: cell},
        plan=make_plan(),
    )
    detail = expect_unpriced(result, UnpricedReason.INVALID_PRICE).detail
    assert "service 123" in detail


# --- estimate_instance: range -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("billingcycle", "cell", "monthly"),
    [
        ("Monthly", "999999.99", "999999.99"),
        ("Monthly", "999999.994", "999999.99"),
        ("Triennially", "35999999.64", "999999.99"),
    ],
)
def test_estimate_instance_accepts_the_largest_monthly(billingcycle: str, cell: str, monthly: str) -> None:
    """A monthly figure that rounds to at most 999999.99 is an estimate."""
    cycle = normalise_cycle(billingcycle)
    assert cycle is not None
    result = expect_estimate(
        estimate_instance(
            make_instance(billingcycle=billingcycle),
            cycle_prices=None,
            plan=make_plan({cycle: cell}),
        )
    )
    assert str(result.monthly) == monthly


@pytest.mark.parametrize(
    ("billingcycle", "cell"),
    [
        ("Monthly", "1000000.00"),
        ("Monthly", "999999.995"),  # rounds half-up to 1000000.00
        ("Triennially", "36000000.36"),  # 1000000.01 a month
        ("Monthly", "1e999999"),
        ("Triennially", "1E+999999999999999999"),
    ],
)
def test_estimate_instance_leaves_a_monthly_over_the_maximum_unpriced(billingcycle: str, cell: str) -> None:
    """A monthly figure over 999999.99 is out of range, however large the price."""
    cycle = normalise_cycle(billingcycle)
    assert cycle is not None
    for cycle_prices, plan in [({cycle: cell}, None), (None, make_plan({cycle: cell}))]:
        result = estimate_instance(
            make_instance(billingcycle=billingcycle), cycle_prices=cycle_prices, plan=plan
        )
        expect_unpriced(result, UnpricedReason.OUT_OF_RANGE)


@pytest.mark.parametrize(
    ("billingcycle", "cell"),
    [
        ("Monthly", "0.001"),
        ("Monthly", "0.0049"),
        ("Triennially", "0.17"),  # 0.0047 a month
        ("Monthly", "1e-999999999999999999"),
    ],
)
def test_estimate_instance_never_stores_zero_for_a_tiny_price(billingcycle: str, cell: str) -> None:
    """A positive price that rounds to 0.00 a month is an invalid price, not a zero estimate."""
    cycle = normalise_cycle(billingcycle)
    assert cycle is not None
    result = estimate_instance(
        make_instance(billingcycle=billingcycle), cycle_prices=None, plan=make_plan({cycle: cell})
    )
    expect_unpriced(result, UnpricedReason.INVALID_PRICE)


def test_estimate_instance_keeps_a_detail_short_for_a_long_cell() -> None:
    """A long raw cell is cut short in the detail."""
    cell = "x" * 10_000
    result = estimate_instance(make_instance(), cycle_prices=None, plan=make_plan({Cycle.MONTHLY: cell}))
    assert len(expect_unpriced(result, UnpricedReason.INVALID_PRICE).detail) < 100


@given(
    price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999.99"), places=2),
    cycle=st.sampled_from(PRICED_CYCLES),
)
def test_estimate_instance_agrees_with_monthly_from_cycle(price: Decimal, cycle: Cycle) -> None:
    """The estimate is monthly_from_cycle's figure, unpriced exactly when out of range or zero."""
    instance = make_instance(billingcycle=cycle.value)
    result = estimate_instance(instance, cycle_prices={cycle: str(price)}, plan=None)
    monthly = monthly_from_cycle(price, cycle.months)
    if monthly > MAX_MONTHLY:
        expect_unpriced(result, UnpricedReason.OUT_OF_RANGE)
    elif monthly == 0:
        expect_unpriced(result, UnpricedReason.INVALID_PRICE)
    else:
        estimate = expect_estimate(result)
        assert estimate.monthly == monthly
        assert estimate.monthly.as_tuple().exponent == -2
        assert abs(estimate.monthly * cycle.months - price) <= Decimal("0.005") * cycle.months


@given(cell=st.text(), cycle=st.sampled_from(PRICED_CYCLES))
def test_estimate_instance_never_raises_on_arbitrary_cells(cell: str, cycle: Cycle) -> None:
    """Whatever text a cell holds, estimating gives an Estimate or an Unpriced."""
    instance = make_instance(billingcycle=cycle.value)
    for cycle_prices, plan in [({cycle: cell}, None), (None, make_plan({cycle: cell}))]:
        result = estimate_instance(instance, cycle_prices=cycle_prices, plan=plan)
        assert isinstance(result, Estimate | Unpriced)


# --- prices that arrived as JSON numbers --------------------------------------------------------


@pytest.mark.parametrize(
    ("billingcycle", "monthly"),
    [("Monthly", "9.99"), ("Quarterly", "9.99"), ("Annually", "8.99"), ("Biennially", "100.00")],
)
def test_estimate_instance_prices_cells_that_arrived_as_json_numbers(billingcycle: str, monthly: str) -> None:
    """A JSON number kept as its Decimal text prices exactly like the same price as a string."""
    body = json.loads(
        '{"monthly": 9.99, "quarterly": 29.970, "annually": 107.88, "biennially": 24e2, "triennially": -1}',
        parse_float=Decimal,
    )
    cells = {Cycle(name): str(value) for name, value in body.items()}
    result = expect_estimate(
        estimate_instance(make_instance(billingcycle=billingcycle), cycle_prices=None, plan=make_plan(cells))
    )
    assert str(result.monthly) == monthly
    triennial = estimate_instance(
        make_instance(billingcycle="Triennially"), cycle_prices=None, plan=make_plan(cells)
    )
    expect_unpriced(triennial, UnpricedReason.CYCLE_NOT_OFFERED)


# --- price_row ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostwinds_instance_id", "instance"),
    [("123", make_instance()), ("999", None), (None, None), ("  ", None)],
)
def test_price_row_prefers_a_finance_override(
    hostwinds_instance_id: str | None, instance: Instance | None
) -> None:
    """An override wins over every Hostwinds price, even for an unknown or missing instance."""
    result = expect_estimate(
        price_row(
            make_row(hostwinds_instance_id),
            instance,
            override=Decimal("12.34"),
            cycle_prices={Cycle.MONTHLY: "4.99"},
            plan=make_plan(),
        )
    )
    assert result == Estimate(
        monthly=Decimal("12.34"),
        source=PriceSource.OVERRIDE,
        product_id=instance.product_id if instance else None,
        product_name=instance.product_name if instance else None,
    )
    assert result.cycle is None


@pytest.mark.parametrize("hostwinds_instance_id", [None, "", "   "])
def test_price_row_without_an_identifier_is_unpriced(hostwinds_instance_id: str | None) -> None:
    """A row with no Hostwinds id, and no override, is unpriced as no_identifier."""
    result = price_row(
        make_row(hostwinds_instance_id),
        None,
        override=None,
        cycle_prices=None,
        plan=make_plan(),
    )
    expect_unpriced(result, UnpricedReason.NO_IDENTIFIER)


def test_price_row_with_no_matching_instance_is_not_found() -> None:
    """A row whose id matched no instance is unpriced as not_found, naming the id."""
    result = price_row(make_row(" 999 "), None, override=None, cycle_prices=None, plan=make_plan())
    assert "'999'" in expect_unpriced(result, UnpricedReason.NOT_FOUND).detail


@pytest.mark.parametrize(
    ("cycle_prices", "source", "monthly"),
    [
        ({Cycle.MONTHLY: "4.99"}, PriceSource.CYCLE_PRICES, "4.99"),
        ({Cycle.MONTHLY: "-1"}, PriceSource.PRICE_LIST, "9.99"),
        (None, PriceSource.PRICE_LIST, "9.99"),
    ],
)
def test_price_row_without_override_estimates_the_instance(
    cycle_prices: dict[Cycle, PriceCell] | None, source: PriceSource, monthly: str
) -> None:
    """Without an override, a matched row is priced by cycle prices, then the price list."""
    result = expect_estimate(
        price_row(
            make_row("123"),
            make_instance(),
            override=None,
            cycle_prices=cycle_prices,
            plan=make_plan(),
        )
    )
    assert (result.source, str(result.monthly)) == (source, monthly)


def test_a_cycle_alias_prices_bi_annually_and_says_so() -> None:
    """With "Bi-Annually" aliased to semiannually, the 6-month price is used and the alias recorded."""
    aliases = {spelling_key("Bi-Annually"): Cycle.SEMIANNUALLY}
    result = estimate_instance(
        make_instance(billingcycle="bi annually"), cycle_prices=None, plan=make_plan(), aliases=aliases
    )
    assert isinstance(result, Estimate)
    assert (result.monthly, result.cycle, result.months) == (Decimal("9.49"), Cycle.SEMIANNUALLY, 6)
    assert result.cycle_alias == "bi annually"


def test_an_alias_never_changes_a_spelling_that_names_a_cycle() -> None:
    """A known spelling is priced by its own cycle and carries no alias."""
    aliases = {spelling_key("Bi-Annually"): Cycle.SEMIANNUALLY}
    result = estimate_instance(
        make_instance(billingcycle="Monthly"), cycle_prices=None, plan=make_plan(), aliases=aliases
    )
    assert isinstance(result, Estimate)
    assert (result.cycle, result.cycle_alias) == (Cycle.MONTHLY, None)
