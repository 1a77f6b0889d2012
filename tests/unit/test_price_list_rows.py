"""The price list is read row by row: one odd row never blanks the list (real accounts are messier)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from cost_sync.domain import matching
from cost_sync.domain.models import Estimate, Instance, PriceList, Unpriced, UnpricedReason, VpsRow
from cost_sync.errors import HostwindsResponseError
from cost_sync.hostwinds.answers import read_price_list
from cost_sync.hostwinds.sandbox import custom_plan_row

ORDINARY = {"id": 101, "rid": 51, "name": "Fixed", "monthly": "9.99", "annually": "107.88"}
OPTION_IDS = {11, 12, 21, 22, 31, 41, 1, 2, 3, 4}
CYCLE_KEYED = {"monthly": {"discount": Decimal("1.5"), "pctoff": "15%", "code": "X"}, "annually": "1.00"}


def custom(**nested: Any) -> dict[str, Any]:
    """The custom plan with its row-level cycles removed and ``nested`` objects set."""
    row = {k: v for k, v in custom_plan_row().items() if k not in {"monthly", "quarterly", "annually"}}
    return {**row, "semiannually": "0.00", "biennially": "0.00", "triennially": "0.00", **nested}


@pytest.mark.parametrize("nested", ["promo", "cycles", "firsts"])
def test_each_nested_object_alone_is_never_a_row_or_a_price(nested: str) -> None:
    """An object keyed by cycle inside a row is ignored: in an ordinary row and in a custom one."""
    answer = {
        "51": {**ORDINARY, nested: CYCLE_KEYED},
        "960": custom(**{nested: CYCLE_KEYED}),
    }

    plans = read_price_list(answer)

    assert sorted(plans) == [101]
    assert dict(plans[101].prices) == {"monthly": "9.99", "annually": "107.88"}
    [skipped] = plans.unreadable
    assert (skipped.key, skipped.path, skipped.custom) == (60, "answer.960.pricing", True)


@pytest.mark.parametrize("plan_key", ["id", "rid"])
def test_pricing_options_never_become_plans_under_either_plan_key(plan_key: str) -> None:
    """With promo and cycles emptied, the resource options inside `pricing` are still not plans."""
    answer = {"51": ORDINARY, "960": custom(promo={}, cycles={})}

    plans = read_price_list(answer, plan_key=plan_key)  # type: ignore[arg-type]

    assert set(plans) == ({101} if plan_key == "id" else {51})
    assert not set(plans) & OPTION_IDS
    assert [u.key for u in plans.unreadable] == [60 if plan_key == "id" else 960]


def test_a_custom_plans_zero_cycles_mean_priced_per_service() -> None:
    """'0.00' beside `pricing` is not 'not offered': the instance is custom_plan, not cycle_not_offered."""
    plans = read_price_list([ORDINARY, custom_plan_row()])
    instance = Instance(serviceid=7, product_id=60, billingcycle="Monthly", disk_type="ssd")
    row = VpsRow(id=uuid.uuid4(), hostwinds_instance_id="7", status="active", approximate_cost=None)

    [outcome] = matching.price_matched(
        [(row, instance)],
        overrides={},
        cycle_prices={},
        price_lists={(False, "ssd"): plans},
        managed=False,
    )

    assert isinstance(outcome.result, Unpriced)
    assert outcome.result.reason is UnpricedReason.CUSTOM_PLAN
    assert "plan 60 is a custom plan priced per service" in outcome.result.detail


def test_a_custom_plan_with_its_own_cycle_prices_is_priced_by_them() -> None:
    """The per-service price of an instance on a custom plan still prices it."""
    plans = read_price_list([ORDINARY, custom_plan_row()])
    instance = Instance(serviceid=7, product_id=60, billingcycle="Monthly", disk_type="ssd")
    row = VpsRow(id=uuid.uuid4(), hostwinds_instance_id="7", status="active", approximate_cost=None)

    [outcome] = matching.price_matched(
        [(row, instance)],
        overrides={},
        cycle_prices={7: {"monthly": "12.50"}},  # type: ignore[dict-item]
        price_lists={(False, "ssd"): plans},
        managed=False,
    )

    assert isinstance(outcome.result, Estimate)
    assert outcome.result.monthly == Decimal("12.50")


@pytest.mark.parametrize(
    ("row", "path", "detail"),
    [
        ({"id": 5, "monthly": "call us", "annually": "-1"}, "answer[1].monthly", "not a number"),
        ({"id": 5, "monthly": {"note": "ask"}}, "answer[1].monthly", "not a number"),
        ({"id": 5, "name": "no prices", "ram": "2"}, "answer[1]", "no cycle price"),
    ],
)
def test_an_unreadable_row_makes_its_instances_plan_unreadable(
    row: dict[str, Any], path: str, detail: str
) -> None:
    """A row the reader cannot use is skipped with its path; its instances say plan_unreadable."""
    plans = read_price_list([ORDINARY, row])
    instance = Instance(serviceid=7, product_id=5, billingcycle="Monthly", disk_type="ssd")
    vps = VpsRow(id=uuid.uuid4(), hostwinds_instance_id="7", status="active", approximate_cost=None)

    [outcome] = matching.price_matched(
        [(vps, instance)], overrides={}, cycle_prices={}, price_lists={(False, "ssd"): plans}, managed=False
    )

    assert [(u.key, u.path) for u in plans.unreadable] == [(5, path)]
    assert detail in plans.unreadable[0].detail
    assert isinstance(outcome.result, Unpriced)
    assert outcome.result.reason is UnpricedReason.PLAN_UNREADABLE
    assert path in outcome.result.detail


def test_the_list_fails_as_a_whole_only_when_no_row_is_readable() -> None:
    """Every row unreadable: the answer fails, naming the first row's path."""
    with pytest.raises(HostwindsResponseError, match=r"reading stopped at answer\.960\.pricing"):
        read_price_list({"960": custom_plan_row()})


def test_price_list_is_still_a_mapping_of_plans() -> None:
    """Callers that only need the plans read a PriceList as the dict it always was."""
    plans = read_price_list([ORDINARY])
    assert isinstance(plans, PriceList)
    assert dict(plans) == {101: plans[101]}
    assert plans.unreadable == ()


def test_fleet_files_choose_the_openapi_shape_error_form_and_per_service_errors(tmp_path: Any) -> None:
    """The sandbox's new options are read from a fleet file; a wrong value names the key."""
    from cost_sync.hostwinds.sandbox import FleetFileError, load_fleet

    path = tmp_path / "fleet.toml"
    path.write_text(
        'api_key = "k"\nprice_list_shape = "openapi"\nerror_form = "object"\n'
        '[[instances]]\nserviceid = 7\n[cycle_price_errors]\n"7" = "Invalid Action."\n'
    )
    fleet = load_fleet(path)
    assert (fleet.price_list_shape, fleet.error_form, fleet.cycle_price_errors) == (
        "openapi",
        "object",
        {7: "Invalid Action."},
    )
    path.write_text('api_key = "k"\nerror_form = "xml"\n')
    with pytest.raises(FleetFileError, match="error_form: must be one of list, object"):
        load_fleet(path)
