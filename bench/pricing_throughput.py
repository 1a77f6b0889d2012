"""Pricing throughput: ``cost_sync.domain.matching.price_rows`` on synthetic rows, in-process, without I/O.

Pricing is pure, so its cost at 100,000 instances can be measured on every benchmark run, without
waiting for a 100,000-instance sync (``--large``). The inputs are built as a run builds them from a
generated fleet (see :func:`fleet.pricing_inputs`); one small call warms up first, then each
repetition prices every row, and the median counts.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TypedDict

from cost_sync.domain.matching import price_rows
from cost_sync.domain.models import Estimate, Unpriced
from figures import median
from fleet import pricing_inputs

#: The fleet size the pricing target is stated for.
PRICING_N = 100_000


class PricingFigures(TypedDict):
    """Seconds to price ``instances`` rows, per repetition, and what the pricing decided."""

    instances: int
    seconds: list[float]
    median_seconds: float
    priced_by_source: dict[str, int]
    unpriced_by_reason: dict[str, int]


def measure_pricing(n: int = PRICING_N, *, repeat: int = 3) -> PricingFigures:
    """Time ``price_rows`` over ``n`` rows ``repeat`` times (after one warm-up on 1,000 rows)."""
    inputs = pricing_inputs(n)

    def price(count: int) -> tuple[float, list[Estimate | Unpriced]]:
        started = time.perf_counter()
        outcomes = price_rows(
            inputs.rows[:count],
            inputs.instances,
            overrides={},
            cycle_prices=inputs.cycle_prices,
            price_lists=inputs.price_lists,
            managed=False,
        )
        return time.perf_counter() - started, [o.result for o in outcomes]

    price(1_000)
    seconds: list[float] = []
    results: list[Estimate | Unpriced] = []
    for _ in range(repeat):
        elapsed, results = price(n)
        seconds.append(elapsed)
    return PricingFigures(
        instances=n,
        seconds=seconds,
        median_seconds=median(seconds),
        priced_by_source=dict(Counter(r.source.value for r in results if isinstance(r, Estimate))),
        unpriced_by_reason=dict(Counter(r.reason.value for r in results if isinstance(r, Unpriced))),
    )
