"""The benchmark's fleet: vps_instances rows for a generated SANDBOX fleet, and pricing inputs.

``cost_sync.hostwinds.sandbox.generate_fleet(n)`` is deterministic, so the rows seeded here name exactly the
instances that ``cost-sync sandbox --generate N`` serves. Most rows name their instance by
serviceid; every fifth by its ``server_uuid`` (some upper-case), as the platform's table does.
Imported by the parent process only: the measuring child never builds a fleet.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cost_sync.domain.matching import PriceListKey
from cost_sync.domain.models import PRICED_CYCLES, Cycle, Instance, Plan, PriceCell, VpsRow, parse_instance
from cost_sync.hostwinds.answers import price_cell_text
from cost_sync.hostwinds.sandbox import Fleet, generate_fleet

__all__ = ["PricingInputs", "Seed", "generate_fleet", "hostwinds_id", "pricing_inputs", "seed_rows"]

#: (id, hostwinds_instance_id, ip_address, region, status, approximate_cost, hostwinds_billing_day)
Seed = tuple[uuid.UUID, str, str, str, str, None, int]

_REGIONS = ("us-east-1", "us-west-1", "eu-central-1")
_PRICED_KEYS: dict[str, Cycle] = {c.value: c for c in PRICED_CYCLES}


def hostwinds_id(index: int, instance: Mapping[str, Any]) -> str:
    """The ``hostwinds_instance_id`` the row of instance ``index`` carries."""
    if index % 5 == 1:
        text = str(instance["server_uuid"])
        return text.upper() if index % 20 == 6 else text
    return str(instance["serviceid"])


def _row_ids(n: int) -> Iterator[uuid.UUID]:
    rng = random.Random(f"cost-sync-bench-{n}")
    for _ in range(n):
        yield uuid.UUID(int=rng.getrandbits(128), version=4)


def seed_rows(fleet: Fleet) -> list[Seed]:
    """One ``active`` row per instance, ``approximate_cost`` NULL: a cold sync changes every priced row."""
    return [
        (row_id, hostwinds_id(i, raw), str(raw["main_ip"]), _REGIONS[i % 3], "active", None, 1 + i % 28)
        for i, (row_id, raw) in enumerate(zip(_row_ids(len(fleet.instances)), fleet.instances, strict=True))
    ]


def _cells(mapping: Mapping[str, Any]) -> dict[Cycle, PriceCell]:
    """The price cell of every priced cycle in a generated answer, as the client hands them over."""
    return {
        _PRICED_KEYS[key]: price_cell_text(value) for key, value in mapping.items() if key in _PRICED_KEYS
    }


@dataclass(frozen=True)
class PricingInputs:
    """What ``cost_sync.domain.matching.price_rows`` receives in a run over a generated fleet."""

    rows: list[VpsRow]
    instances: list[Instance]
    cycle_prices: dict[int, dict[Cycle, PriceCell]]
    price_lists: dict[PriceListKey, dict[int, Plan]]


def pricing_inputs(n: int) -> PricingInputs:
    """The inputs of pricing ``n`` generated instances, built as the client builds them, without I/O."""
    fleet = generate_fleet(n)
    instances = [parse_instance(raw) for raw in fleet.instances]
    # Every matched service gets an answer in a run: {} when Hostwinds has no per-service data.
    cycle_prices = {
        instance.serviceid: _cells(fleet.cycle_prices.get(instance.serviceid, {})) for instance in instances
    }
    price_lists: dict[PriceListKey, dict[int, Plan]] = {}
    for raw in fleet.plans:
        key = (bool(raw.get("managed", False)), str(raw.get("drive_type", "ssd")))
        plan = Plan(id=int(raw["id"]), name=str(raw["name"]), prices=_cells(raw))
        price_lists.setdefault(key, {})[plan.id] = plan
    rows = [
        VpsRow(id=row_id, hostwinds_instance_id=hw_id, status=status, approximate_cost=cost)
        for row_id, hw_id, _ip, _region, status, cost, _day in seed_rows(fleet)
    ]
    return PricingInputs(rows=rows, instances=instances, cycle_prices=cycle_prices, price_lists=price_lists)
