"""Test doubles shared by unit and integration tests: a fake Hostwinds answering the Cloud API protocol."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

URL = "https://hostwinds.test/cloud/api.php"
API_KEY = "TEST-KEY-do-not-log-1f2e3d"

PLANS: list[dict[str, Any]] = [
    {
        "id": 101,
        "name": "Unmanaged Linux 1 CPU / 2 GB",
        "monthly": "9.99",
        "quarterly": "29.97",
        "semiannually": "56.94",
        "annually": "119.00",
        "biennially": "203.76",
        "triennially": "359.64",
        "promo": {},
        "percent": 0,
        "firsts": [],
        "rid": 52,
        "mtotal": "9.99",
    },
    {
        "id": 102,
        "name": "Unmanaged Linux 2 CPU / 4 GB",
        "monthly": 19.99,
        "quarterly": "-1.00",
        "semiannually": "",
        "annually": "215.89",
        "biennially": "-1",
        "triennially": "0.00",
    },
    {"id": 103, "name": "Absurd", "monthly": "1000000.00", "annually": "99999999.99"},
]


def instance(
    serviceid: int, *, cycle: str = "Monthly", product_id: int = 101, **extra: Any
) -> dict[str, Any]:
    """A Hostwinds instance object as get_instances sends it, secrets included."""
    return {
        "serviceid": serviceid,
        "server_uuid": str(uuid.UUID(int=serviceid)),
        "product_id": product_id,
        "product_name": f"plan {product_id}",
        "billingcycle": cycle,
        "hourly": 0,
        "disk_type": "ssd",
        "status": "ACTIVE",
        "password": "root-pw-NEVER-STORE",
        "configkey": "cfg-NEVER-STORE",
        **extra,
    }


@dataclass
class FakeHostwinds:
    """Answers the Hostwinds protocol from in-memory data; faults per action on request."""

    instances: list[dict[str, Any]] = field(default_factory=list)
    plans: list[dict[str, Any]] = field(default_factory=lambda: list(PLANS))
    cycle_prices: dict[int, dict[str, Any]] = field(default_factory=dict)
    fail: dict[str, Callable[[], httpx.Response]] = field(default_factory=dict)
    #: serviceid -> the answer its get_billingcycle_prices gets instead of its prices.
    service_faults: dict[int, Callable[[], httpx.Response]] = field(default_factory=dict)
    #: serviceids asked for cycle prices, in order.
    asked: list[int] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    forms: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        action = form.get("action", "")
        self.requests[action] += 1
        if form.get("API") != API_KEY:
            return _json([{"result": "error", "action": "Authorization", "message": "Not Authorized!"}])
        if action in self.fail:
            return self.fail[action]()
        if action == "get_instances":
            return _json({"success": self.instances})
        if action == "get_price_list":
            return _json({"success": self.plans})
        if action == "get_billingcycle_prices":
            serviceid = int(form["serviceid"])
            self.asked.append(serviceid)
            if serviceid in self.service_faults:
                return self.service_faults[serviceid]()
            return _json({"success": self.cycle_prices.get(int(form["serviceid"]), {})})
        return _json([{"result": "error", "action": action, "message": "Invalid Action."}])


def _json(body: Any) -> httpx.Response:
    return httpx.Response(200, text=json.dumps(body))
