"""A made-up fleet of any size, deterministic for a seed: plans, cycles, statuses and price spellings
in the proportions a real account shows, for tests and the benchmark."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from cost_sync.hostwinds.sandbox.fleet import Fleet
from cost_sync.hostwinds.sandbox.server import SANDBOX_API_KEY

__all__ = [
    "generate_fleet",
]


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
