"""The SANDBOX Hostwinds API over real sockets: protocol, container shapes, faults, fleets, lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from cost_sync.domain import pricing
from cost_sync.domain.models import Estimate, PriceSource, Unpriced, UnpricedReason
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sandbox import (
    DEMO_FLEET_PATH,
    SANDBOX_API_KEY,
    Container,
    Faults,
    Fleet,
    FleetFileError,
    SandboxServer,
    generate_fleet,
    load_demo_fleet,
    load_fleet,
    serve,
)

DEMO = load_demo_fleet()
AUTH_ERROR = [{"result": "error", "action": "Authorization", "message": "Not Authorized!", "ERROR": "6734"}]
HOSTWINDS_CYCLES = {"Monthly", "Quarterly", "Semi-Annually", "Annually", "Biennially", "Triennially"}


@pytest_asyncio.fixture(scope="module")
async def running() -> AsyncIterator[SandboxServer]:
    """One sandbox server on 127.0.0.1 for the whole module."""
    async with SandboxServer(DEMO) as server:
        yield server


@pytest.fixture
def server(running: SandboxServer) -> SandboxServer:
    """The module's server with the demo fleet, no faults and zeroed counters."""
    running.fleet = DEMO
    running.faults = Faults()
    running.requests.clear()
    return running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client, as a Hostwinds client would use."""
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def post(
    http: httpx.AsyncClient,
    server: SandboxServer,
    action: str,
    *,
    key: str | None = SANDBOX_API_KEY,
    **params: Any,
) -> httpx.Response:
    """POST one form-encoded action to the sandbox, as Hostwinds expects it."""
    form = {"action": action, **{name: str(value) for name, value in params.items()}}
    if key is not None:
        form["API"] = key
    return await http.post(server.url, data=form)


def sorted_ids(rows: list[dict[str, Any]]) -> list[int]:
    """The plan ids of price-list rows, sorted."""
    return sorted(int(row["id"]) for row in rows)


# -- protocol ------------------------------------------------------------------------------------


async def test_wrong_or_missing_key_gets_the_auth_envelope_with_http_200(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """A wrong or missing API key is answered with Hostwinds' auth error list, HTTP 200."""
    for key in ("not-the-key", "", None):
        response = await post(http, server, "get_instances", key=key)
        assert response.status_code == 200
        assert response.json() == AUTH_ERROR


async def test_every_response_is_labelled_as_the_sandbox(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """API answers, errors, 404s and control answers all carry X-Sandbox: hostwinds."""
    responses = [
        await post(http, server, "get_instances"),
        await post(http, server, "get_instances", key="wrong"),
        await http.get(server.url),
        await http.get(server.base_url + "/nowhere"),
        await http.get(server.base_url + "/_sandbox/requests"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 405, 404, 200]
    assert all(r.headers["X-Sandbox"] == "hostwinds" for r in responses)


async def test_url_is_the_api_path_on_the_bound_port_and_root_also_answers(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """Port 0 binds a real port; the API answers on /cloud/api.php and on /."""
    assert server.url == f"http://127.0.0.1:{server.port}/cloud/api.php"
    assert server.port > 0
    response = await http.post(
        server.base_url + "/", data={"action": "get_instances", "API": SANDBOX_API_KEY}
    )
    assert len(response.json()["success"]) == len(DEMO.instances)


def items_of(body: Any, container: Container) -> list[dict[str, Any]]:
    """The items of an answer in one of the three container shapes, checking the shape on the way."""
    if container == "bare":
        assert isinstance(body, list)
        return body
    assert list(body) == ["success"]
    if container == "object":
        assert isinstance(body["success"], dict)
        return list(body["success"].values())
    assert isinstance(body["success"], list)
    return list(body["success"])


CONTAINERS: list[Container] = ["list", "object", "bare"]


@pytest.mark.parametrize("container", CONTAINERS)
async def test_get_instances_answers_in_the_fleets_container_shape(
    server: SandboxServer, http: httpx.AsyncClient, container: Container
) -> None:
    """get_instances answers a success list, an object keyed by serviceid, or a bare list, raw."""
    server.fleet = dataclasses.replace(DEMO, container=container)
    body = (await post(http, server, "get_instances")).json()
    instances = items_of(body, container)
    assert instances == DEMO.instances  # raw: password and configkey included
    assert all("password" in i and "configkey" in i for i in instances)
    if container == "object":
        assert list(body["success"]) == [str(i["serviceid"]) for i in DEMO.instances]


@pytest.mark.parametrize("container", CONTAINERS)
async def test_get_price_list_answers_in_the_fleets_container_shape(
    server: SandboxServer, http: httpx.AsyncClient, container: Container
) -> None:
    """get_price_list uses the same container shapes, keyed by plan id for an object."""
    server.fleet = dataclasses.replace(DEMO, container=container)
    body = (await post(http, server, "get_price_list", managed=0)).json()
    assert sorted_ids(items_of(body, container)) == [101, 102, 103, 104]
    if container == "object":
        assert sorted(body["success"]) == ["101", "102", "103", "104"]


async def test_get_instance_by_serviceid_and_unknown_serviceid_error(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """get_instance answers one instance (a string serviceid in the fleet too), else the serviceid error."""
    one = (await post(http, server, "get_instance", serviceid=1234571)).json()
    assert one["success"]["server_uuid"] == "9db598e2-0928-4036-b7dd-ff72ff8fae99"
    for bad in ({"serviceid": 9999999}, {"serviceid": "abc"}, {}):
        body = (await post(http, server, "get_instance", **bad)).json()
        assert body == [
            {"result": "error", "action": "get_instance", "message": "A valid serviceid is required."}
        ]


async def test_price_list_defaults_to_managed_ssd_like_hostwinds(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """With no managed parameter the managed prices are served, as Hostwinds' default is 1."""
    rows = (await post(http, server, "get_price_list")).json()["success"]
    assert sorted_ids(rows) == [101, 102, 103, 104]
    assert {row["monthly"] for row in rows} == {"10.99", "15.99", "25.99", "45.99"}


async def test_price_list_filters_by_managed_and_drive_type(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """managed=0 and drive_type select the unmanaged and the NVMe listings; an unknown drive is empty."""
    unmanaged = (await post(http, server, "get_price_list", managed=0, drive_type="ssd")).json()["success"]
    nvme = (await post(http, server, "get_price_list", managed=0, drive_type="nvme")).json()["success"]
    managed_nvme = (await post(http, server, "get_price_list", managed=1, drive_type="nvme")).json()[
        "success"
    ]
    floppy = (await post(http, server, "get_price_list", managed=0, drive_type="floppy")).json()["success"]
    assert {row["id"]: row["monthly"] for row in unmanaged} == {
        101: "4.99",
        102: "9.99",
        103: "19.99",
        104: "39.99",
    }
    assert sorted_ids(nvme) == [201]
    assert managed_nvme == floppy == []


async def test_price_list_rows_keep_prices_as_strings_and_hide_sandbox_keys(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """Rows are sent as written ("-1.00" and all), without the sandbox's managed/drive_type keys."""
    response = await post(http, server, "get_price_list", managed=0)
    row = next(r for r in response.json()["success"] if r["id"] == 104)
    assert row["triennially"] == "-1.00"
    assert row["monthly"] == "39.99"
    assert "managed" not in row
    assert "drive_type" not in row
    assert '"monthly":"39.99"' in response.text


async def test_json_numbers_in_a_fleet_are_served_with_their_exact_digits(
    server: SandboxServer, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A number in a fleet file (19.990, 1E+2) reaches the client as that exact JSON number."""
    path = tmp_path / "numbers.json"
    path.write_text(
        '{"api_key": "k", "plans": [{"id": 7, "monthly": 19.990, "annually": 1E+2, "quarterly": "29.97"}]}'
    )
    server.fleet = load_fleet(path)
    response = await post(http, server, "get_price_list", key="k", managed=0)
    assert '"monthly":19.990,"annually":1E+2,"quarterly":"29.97"' in response.text


async def test_billingcycle_prices_per_service_empty_or_error(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """A service's own prices, {} for a known service without data, the serviceid error otherwise."""
    own = (await post(http, server, "get_billingcycle_prices", serviceid=1234574)).json()
    none = (await post(http, server, "get_billingcycle_prices", serviceid=1234567)).json()
    unknown = (await post(http, server, "get_billingcycle_prices", serviceid=42)).json()
    assert own == {"success": DEMO.cycle_prices[1234574]}
    assert own["success"]["monthly"] == "17.99"
    assert none == {"success": {}}
    assert unknown == [
        {"result": "error", "action": "get_billingcycle_prices", "message": "A valid serviceid is required."}
    ]


async def test_cycle_prices_shape_empty_answers_the_documented_body_for_every_service(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """With cycle_prices_shape "empty" every known service gets {}, the only documented body."""
    server.fleet = dataclasses.replace(DEMO, cycle_prices_shape="empty")
    own = (await post(http, server, "get_billingcycle_prices", serviceid=1234574)).json()
    unknown = (await post(http, server, "get_billingcycle_prices", serviceid=42)).json()
    assert own == {}
    assert unknown[0]["message"] == "A valid serviceid is required."


def test_fleet_file_rejects_an_unknown_cycle_prices_shape(tmp_path: Path) -> None:
    """A fleet naming a cycle_prices_shape other than cycle_keyed or empty is refused, naming the key."""
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"api_key": "k", "cycle_prices_shape": "nested"}))
    with pytest.raises(FleetFileError, match="cycle_prices_shape: must be one of cycle_keyed, empty"):
        load_fleet(path)


async def test_check_upgrade_order_and_unknown_action(server: SandboxServer, http: httpx.AsyncClient) -> None:
    """check_upgrade_order has nothing pending; an unknown or missing action is Invalid Action."""
    assert (await post(http, server, "check_upgrade_order", serviceid=1234567)).json() == {"success": []}
    assert (await post(http, server, "get_everything")).json() == [
        {"result": "error", "action": "get_everything", "message": "Invalid Action."}
    ]
    missing = await http.post(server.url, data={"API": SANDBOX_API_KEY})
    assert missing.json() == [{"result": "error", "action": "", "message": "Invalid Action."}]


async def test_write_actions_are_refused_counted_and_logged_loudly(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """upgrade_instance and friends get Invalid Action, are counted, and log a warning."""
    with capture_logs() as logs:
        for action in ("upgrade_instance", "change_billing_cycle", "add_instance", "upgrade_to_managed"):
            body = (await post(http, server, action, serviceid=1234567, rid=52)).json()
            assert body == [{"result": "error", "action": action, "message": "Invalid Action."}]
    assert server.requests["upgrade_instance"] == 1
    assert sum(server.requests.values()) == 4
    refused = [e for e in logs if e["event"] == "sandbox.write_action_refused"]
    assert [e["log_level"] for e in refused] == ["warning"] * 4
    assert "sandbox: write action refused" in refused[0]["note"]
    assert all(SANDBOX_API_KEY not in repr(e) for e in logs)


# -- faults --------------------------------------------------------------------------------------


async def test_fail_next_answers_a_503_burst_then_recovers(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """fail_next=2 makes the next two requests HTTP 503, and the third is answered normally."""
    server.faults.fail_next = 2
    statuses = [(await post(http, server, "get_instances")).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert server.faults.fail_next == 0
    assert server.requests["get_instances"] == 3


async def test_html_next_answers_an_html_page_with_http_200(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """html_next answers HTTP 200 with an HTML body that is not JSON, then recovers."""
    server.faults.html_next = 1
    page = await post(http, server, "get_instances")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError, match="Expecting value"):
        page.json()
    assert "success" in (await post(http, server, "get_instances")).json()


async def test_rate_limit_answers_429_with_retry_after(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """rate_limit_next answers HTTP 429 carrying Retry-After: retry_after seconds."""
    server.faults = Faults(rate_limit_next=1, retry_after=7)
    limited = await post(http, server, "get_instances")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert (await post(http, server, "get_instances")).status_code == 200


async def test_latency_is_applied_to_each_request(server: SandboxServer, http: httpx.AsyncClient) -> None:
    """latency_seconds delays an answer by about that long."""
    server.faults.latency_seconds = 0.2
    started = time.perf_counter()
    response = await post(http, server, "get_instances")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed >= 0.2


async def test_auth_error_fault_refuses_even_the_right_key(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """auth_error makes every request, with the right key, get the auth error envelope."""
    server.faults.auth_error = True
    for action in ("get_instances", "get_price_list"):
        assert (await post(http, server, action)).json() == AUTH_ERROR


async def test_faults_can_target_one_action(server: SandboxServer, http: httpx.AsyncClient) -> None:
    """With actions set, only those actions are faulted and consume the counters."""
    server.faults = Faults(fail_next=1, actions=frozenset({"get_billingcycle_prices"}))
    assert (await post(http, server, "get_instances")).status_code == 200
    assert (await post(http, server, "get_billingcycle_prices", serviceid=1234574)).status_code == 503
    assert (await post(http, server, "get_billingcycle_prices", serviceid=1234574)).status_code == 200


async def test_control_endpoints_set_faults_and_report_counters(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """POST /_sandbox/faults sets fields, GET /_sandbox/requests reports counters, DELETE resets."""
    answer = await http.post(
        server.base_url + "/_sandbox/faults", json={"fail_next": 1, "actions": ["get_instances"]}
    )
    assert answer.json()["fail_next"] == 1
    assert server.faults.actions == frozenset({"get_instances"})
    assert (await post(http, server, "get_instances")).status_code == 503
    await post(http, server, "get_price_list")
    counters = (await http.get(server.base_url + "/_sandbox/requests")).json()
    assert counters == {"get_instances": 1, "get_price_list": 1}
    await http.delete(server.base_url + "/_sandbox/requests")
    await http.delete(server.base_url + "/_sandbox/faults")
    assert server.requests == {}
    assert server.faults == Faults()


@pytest.mark.parametrize(
    "body",
    [{"fail_nxt": 1}, {"fail_next": -1}, {"fail_next": "2"}, {"auth_error": 1}, {"actions": "x"}, [1], "{"],
)
async def test_control_endpoint_rejects_bad_fault_settings(
    server: SandboxServer, http: httpx.AsyncClient, body: Any
) -> None:
    """An unknown field, a wrong type or non-JSON is a 400 and changes nothing."""
    content = body if isinstance(body, str) else json.dumps(body)
    answer = await http.post(server.base_url + "/_sandbox/faults", content=content)
    assert answer.status_code == 400
    assert "error" in answer.json()
    assert server.faults == Faults()


# -- the real client against the demo fleet ------------------------------------------------------


async def test_demo_fleet_through_the_real_client_prices_as_its_header_says(
    server: SandboxServer, http: httpx.AsyncClient
) -> None:
    """cost-sync's client and pricing get the outcomes the demo fleet file promises, and no write."""
    client = HostwindsClient(http, SANDBOX_API_KEY, url=server.url, requests_per_second=None)
    instances = await client.get_instances()
    lists = {drive: await client.get_price_list(managed=False, drive_type=drive) for drive in ("ssd", "nvme")}
    results: dict[int, Estimate | Unpriced] = {}
    for instance in instances:
        cycle_prices = await client.get_billingcycle_prices(instance.serviceid)
        plan = lists[instance.disk_type or "ssd"].get(instance.product_id or 0)
        results[instance.serviceid] = pricing.estimate_instance(
            instance, cycle_prices=cycle_prices, plan=plan
        )
    monthly = {sid: r.monthly for sid, r in results.items() if isinstance(r, Estimate)}
    assert monthly == {
        1234567: Decimal("4.99"),
        1234568: Decimal("9.99"),
        1234569: Decimal("9.49"),
        1234570: Decimal("17.99"),
        1234571: Decimal("16.99"),
        1234572: Decimal("7.99"),
        1234573: Decimal("39.99"),
        1234574: Decimal("17.99"),
        1234575: Decimal("44.99"),
        1234578: Decimal("23.99"),
        1234579: Decimal("4.24"),
    }
    reasons = {sid: r.reason for sid, r in results.items() if isinstance(r, Unpriced)}
    assert reasons == {1234576: UnpricedReason.UNKNOWN_CYCLE, 1234577: UnpricedReason.CYCLE_NOT_OFFERED}
    hourly = results[1234573]
    assert isinstance(hourly, Estimate)
    assert hourly.hourly_ceiling
    discounted = results[1234574]
    assert isinstance(discounted, Estimate)
    assert discounted.source is PriceSource.CYCLE_PRICES
    assert set(server.requests) <= {"get_instances", "get_price_list", "get_billingcycle_prices"}


# -- fleets --------------------------------------------------------------------------------------


def test_demo_fleet_covers_every_case_it_is_for() -> None:
    """The demo fleet has a dozen instances, 4+ unmanaged plans, every cycle, hourly and odd cases."""
    assert DEMO_FLEET_PATH.is_file()
    assert DEMO_FLEET_PATH.read_text().startswith("# SANDBOX fleet")
    assert 10 <= len(DEMO.instances) <= 15
    unmanaged = {p["id"] for p in DEMO.plans if not p.get("managed", False)}
    assert len(unmanaged) >= 4
    cycles = {i["billingcycle"] for i in DEMO.instances}
    assert cycles >= HOSTWINDS_CYCLES
    assert "Bi-Annually" in cycles
    assert sum(1 for i in DEMO.instances if int(i["hourly"]) == 1) == 1
    assert sorted(DEMO.cycle_prices) == [1234574, 1234575]
    for instance in DEMO.instances:
        assert len(str(instance["serviceid"])) == 7
        assert uuid.UUID(instance["server_uuid"]).version == 4
        assert {"password", "configkey", "product_id", "disk_type", "status"} <= instance.keys()
    for plan in DEMO.plans:
        assert all(isinstance(plan[c], str) for c in ("monthly", "quarterly", "annually", "triennially"))


def test_fleet_repr_hides_the_key_and_the_data() -> None:
    """A fleet's repr shows sizes, never the API key or instance fields."""
    text = repr(DEMO)
    assert text == "Fleet(instances=13, plans=9, cycle_prices=2, container='list')"
    with pytest.raises(ValueError, match="container"):
        Fleet(api_key="k", container="tree")  # type: ignore[arg-type]


def test_broken_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    """A TOML syntax error is a FleetFileError naming the file and the line."""
    path = tmp_path / "broken.toml"
    path.write_text('api_key = "k"\n\n[[instances]]\nserviceid = 1234567\nstatus = ACTIVE\n')
    with pytest.raises(FleetFileError, match=r"broken\.toml: line 5\b"):
        load_fleet(path)


def test_broken_json_names_the_file_and_the_line(tmp_path: Path) -> None:
    """A JSON syntax error is a FleetFileError naming the file and the line."""
    path = tmp_path / "broken.json"
    path.write_text('{\n  "api_key": "k",\n  "instances": [\n    {"serviceid": 1,}\n  ]\n}\n')
    with pytest.raises(FleetFileError, match=r"broken\.json: line 4\b"):
        load_fleet(path)


@pytest.mark.parametrize(
    ("data", "entry"),
    [
        ({"instances": [{"serviceid": 1}, {"serviceid": True}]}, r"instances\[1\]: serviceid"),
        ({"instances": [{"serviceid": 1}, {"serviceid": "1"}]}, r"instances\[1\] \(serviceid 1\)"),
        ({"plans": [{"id": 5, "managed": "yes"}]}, r"plans\[0\] \(id 5\): managed"),
        ({"cycle_prices": {"77": {"monthly": "1.00"}}}, r"cycle_prices\.77: no instance"),
        ({"container": "tree"}, r"container"),
        ({"instance": []}, r"unknown top-level key\(s\): instance"),
        (
            {"instances": [{"serviceid": 1}], "cycle_prices": {"1": "9.99"}},
            r"cycle_prices\.1: must be a table",
        ),
        ({"cycle_prices": {"x": {}}}, r"cycle_prices\.x: the key must be a serviceid"),
        ({"cycle_price_errors": {"x": "gone"}}, r"cycle_price_errors\.x: the key must be a serviceid"),
        ({"cycle_price_errors": {"0077": "gone"}}, r"cycle_price_errors\.0077: no instance has serviceid 77"),
        ({"instances": [{"serviceid": 1}], "cycle_price_errors": {"1": 5}}, r"1: must be the error message"),
        ({"cycle_prices": []}, r"cycle_prices: must be a table/object keyed by serviceid"),
        ({"price_list_shape": "deep"}, r"price_list_shape: must be one of .*, not 'deep'"),
        ({"error_form": "shout"}, r"error_form: must be one of .*, not 'shout'"),
        ({"cycle_prices_shape": 3}, r"cycle_prices_shape: must be one of .*, not 3"),
    ],
)
def test_fleet_schema_errors_name_the_file_and_the_entry(
    tmp_path: Path, data: dict[str, Any], entry: str
) -> None:
    """A structural error is a FleetFileError naming the file and the offending entry."""
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"api_key": "k", **data}))
    with pytest.raises(FleetFileError, match=rf"fleet\.json: .*{entry}"):
        load_fleet(path)


def test_unreadable_or_misnamed_fleet_files_are_fleet_file_errors(tmp_path: Path) -> None:
    """A missing file or a suffix other than .toml/.json is a FleetFileError naming the file."""
    with pytest.raises(FleetFileError, match=r"absent\.toml"):
        load_fleet(tmp_path / "absent.toml")
    with pytest.raises(FleetFileError, match=r"fleet\.yaml"):
        load_fleet(tmp_path / "fleet.yaml")


def test_generate_fleet_is_deterministic_and_varied() -> None:
    """generate_fleet(10_000) is repeatable per seed and covers cycles, hourly and cycle prices."""
    fleet = generate_fleet(10_000)
    assert fleet == generate_fleet(10_000)
    assert fleet != generate_fleet(10_000, seed=1)
    assert len(fleet.instances) == 10_000
    assert [int(i["serviceid"]) for i in fleet.instances] == list(range(100000, 110000))
    assert {i["billingcycle"] for i in fleet.instances} >= HOSTWINDS_CYCLES
    assert 0 < sum(1 for i in fleet.instances if i["hourly"] == 1) < 1_000
    assert 3_000 <= len(fleet.cycle_prices) <= 3_500
    assert 4 <= len({p["id"] for p in fleet.plans}) <= 10
    assert all("password" in i for i in fleet.instances[:10])
    assert fleet.api_key == SANDBOX_API_KEY


# -- lifecycle -----------------------------------------------------------------------------------


async def test_a_taken_port_raises_oserror_naming_it(server: SandboxServer) -> None:
    """Starting on a port already listened on raises OSError naming the port, for start() and serve()."""
    with pytest.raises(OSError, match=rf"port {server.port} .*already in use"):
        await SandboxServer(DEMO, port=server.port).start()
    with pytest.raises(OSError, match=rf"port {server.port}"):
        await serve(DEMO, host="127.0.0.1", port=server.port)


async def test_serve_runs_until_cancelled_and_releases_the_port(http: httpx.AsyncClient) -> None:
    """serve() answers until its task is cancelled, then stops cleanly and frees the port."""
    with capture_logs() as logs:
        task = asyncio.create_task(serve(DEMO, host="127.0.0.1", port=0))
        for _ in range(500):
            started = [e for e in logs if e["event"] == "sandbox.started"]
            if started:
                break
            await asyncio.sleep(0.01)
        url = started[0]["url"]
        assert "SANDBOX" in started[0]["note"]
        response = await http.post(url, data={"action": "get_instances", "API": SANDBOX_API_KEY})
        assert response.status_code == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert any(e["event"] == "sandbox.stopped" for e in logs)
    with pytest.raises(httpx.ConnectError):
        await http.post(url, data={"action": "get_instances"})
