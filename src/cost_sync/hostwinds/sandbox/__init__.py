"""A SANDBOX Hostwinds Cloud API: a real HTTP server on 127.0.0.1 serving a made-up fleet.

This is not Hostwinds. It speaks the protocol as the Hostwinds API notes describe it (one
``POST /cloud/api.php`` endpoint, form bodies with ``action`` and ``API``, error envelopes with
HTTP 200, ``{"success": ...}`` answers in the container shape a fleet asks for) so that tests,
``cost-sync demo`` and the benchmark can run the real client over real sockets, with no network
and no real key. Every response carries ``X-Sandbox: hostwinds``, every log line is a
``sandbox.*`` event, and the data comes from a fleet file (``docs/sandbox.md``) or
:func:`generate_fleet`.

What it serves:

- ``get_instances``, ``get_instance``, ``get_price_list`` (filtered by ``managed``, default 1 as
  Hostwinds does, and ``drive_type``, default ``ssd``), ``get_billingcycle_prices`` and
  ``check_upgrade_order``; prices exactly as the fleet wrote them (strings stay strings, numbers
  keep their digits).
- Write actions (``upgrade_instance``, ``change_billing_cycle``...) are refused with
  ``Invalid Action.``, counted, and logged as a warning: cost-sync must never send them.
- :class:`Faults` injects latency, 503 bursts, 200 HTML pages, 429 with ``Retry-After`` and auth
  errors, set in-process (``server.faults``) or from another process via
  ``POST /_sandbox/faults``; ``GET /_sandbox/requests`` returns the per-action request counters.
"""

from __future__ import annotations

from cost_sync.hostwinds.sandbox.faults import Faults
from cost_sync.hostwinds.sandbox.fleet import (
    DEMO_FLEET_PATH,
    Container,
    CyclePricesShape,
    ErrorForm,
    Fleet,
    FleetFileError,
    PriceListShape,
    load_demo_fleet,
    load_fleet,
)
from cost_sync.hostwinds.sandbox.generate import generate_fleet
from cost_sync.hostwinds.sandbox.server import (
    API_PATH,
    CUSTOM_PLAN_ID,
    SANDBOX_API_KEY,
    WRITE_ACTIONS,
    SandboxServer,
    custom_plan_row,
    serve,
)

__all__ = [
    "API_PATH",
    "CUSTOM_PLAN_ID",
    "DEMO_FLEET_PATH",
    "SANDBOX_API_KEY",
    "WRITE_ACTIONS",
    "Container",
    "CyclePricesShape",
    "ErrorForm",
    "Faults",
    "Fleet",
    "FleetFileError",
    "PriceListShape",
    "SandboxServer",
    "custom_plan_row",
    "generate_fleet",
    "load_demo_fleet",
    "load_fleet",
    "serve",
]
