"""The Hostwinds client against respx: envelopes, retries, the allow-list, secrets and parsing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import traceback
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import pytest_asyncio
import respx
import structlog
from structlog.testing import capture_logs

from cost_sync.domain.models import Cycle
from cost_sync.errors import (
    ForbiddenActionError,
    HostwindsAuthError,
    HostwindsResponseError,
    HostwindsTransientError,
)
from cost_sync.hostwinds import client as hostwinds
from cost_sync.hostwinds import retry
from cost_sync.hostwinds.answers import price_cell_text
from cost_sync.hostwinds.client import AUTH_ERROR_MESSAGE, HostwindsClient

URL = "https://hostwinds.test/cloud/api.php"
API_KEY = "hw-test-key-5f2b9c1d8e7a6b4c3d2e1f0a"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "hostwinds"
PASSWORDS = ("Tr0ub4dor&3-root-password", "correct-horse-battery-staple", "winAdmin!2024-root")
CONFIG_KEYS = ("cfgkey-7f3a9b21c4d5e6f7", "cfgkey-0a1b2c3d4e5f6a7b", "cfgkey-1122334455667788")


def fixture_text(name: str) -> str:
    """The text of a JSON fixture under tests/fixtures/hostwinds."""
    return (FIXTURES / name).read_text(encoding="utf-8")


def ok(body: Any) -> httpx.Response:
    """An HTTP 200 with ``body`` serialised as JSON."""
    return httpx.Response(200, text=json.dumps(body))


def form_of(request: httpx.Request) -> dict[str, str]:
    """The form fields of a request, one value each."""
    fields = parse_qs(request.content.decode(), keep_blank_values=True, strict_parsing=True)
    return {name: values[0] for name, values in fields.items()}


class RecordingSleep:
    """An instant stand-in for asyncio.sleep that records every delay asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """A respx router that fails any request it has no route for."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def api(router: respx.MockRouter) -> respx.Route:
    """The route for every POST to the test endpoint; give it a response or side effect."""
    return router.post(URL)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client that the test, not the Hostwinds client, closes."""
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def sleep() -> RecordingSleep:
    """The injected sleep of the client under test."""
    return RecordingSleep()


@pytest.fixture
def client(http: httpx.AsyncClient, sleep: RecordingSleep) -> HostwindsClient:
    """A client with no rate limit, so recorded sleeps are retry delays only."""
    return HostwindsClient(http, API_KEY, url=URL, requests_per_second=None, sleep=sleep)


# Envelopes


async def test_success_list_of_instances_is_parsed(api: respx.Route, client: HostwindsClient) -> None:
    """A {"success": [...]} answer yields one Instance per item, ids given as strings included."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("instances_success_list.json")))

    instances = await client.get_instances()

    assert [(i.serviceid, i.product_id) for i in instances] == [(1001, 101), (1002, 102)]
    assert instances[1].billingcycle == "Semi-Annually"
    assert instances[1].disk_type == "nvme"
    assert instances[0].hourly is False


async def test_success_object_keyed_by_id_is_parsed(api: respx.Route, client: HostwindsClient) -> None:
    """A {"success": {id: item}} answer yields its values as instances."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("instances_keyed_by_id.json")))

    instances = await client.get_instances()

    assert [i.serviceid for i in instances] == [1001, 1003]
    assert instances[1].hourly is True


async def test_bare_list_without_success_wrapper_is_accepted(
    api: respx.Route, client: HostwindsClient
) -> None:
    """A bare list answer with no "success" wrapper is read as the container itself."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("instances_bare_list.json")))

    instances = await client.get_instances()

    assert [(i.serviceid, i.billingcycle) for i in instances] == [(1001, "Quarterly")]


async def test_error_list_with_http_200_is_a_response_error(
    api: respx.Route, client: HostwindsClient
) -> None:
    """An error envelope sent with HTTP 200 raises a response error naming the action and message."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("error_invalid_action.json")))

    with pytest.raises(HostwindsResponseError) as caught:
        await client.get_instances()

    assert str(caught.value) == "get_instances: Hostwinds answered an error: Invalid Action."
    assert api.call_count == 1


async def test_error_with_code_names_message_and_code(api: respx.Route, client: HostwindsClient) -> None:
    """An error envelope with an opaque "ERROR" code keeps the code in the message, unretried."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("error_with_code.json")))

    with pytest.raises(HostwindsResponseError) as caught:
        await client.get_instance(77)

    assert str(caught.value) == (
        "get_instance: Hostwinds answered an error: A valid serviceid is required. (code 6734)"
    )
    assert api.call_count == 1
    assert client.requests == {("get_instance", "error"): 1}


async def test_long_error_message_is_truncated(api: respx.Route, client: HostwindsClient) -> None:
    """Hostwinds' message is cut to 200 characters so a huge answer cannot flood a log line."""
    api.mock(return_value=ok([{"result": "error", "message": "x" * 5000}]))

    with pytest.raises(HostwindsResponseError) as caught:
        await client.call("get_instances")

    assert str(caught.value) == "get_instances: Hostwinds answered an error: " + "x" * 197 + "..."


# Authentication


async def test_auth_error_is_not_retried_and_has_the_exact_message(
    api: respx.Route, client: HostwindsClient, sleep: RecordingSleep
) -> None:
    """ "Not Authorized!" raises HostwindsAuthError after exactly one request, with the fixed message."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("error_not_authorized.json")))

    with pytest.raises(HostwindsAuthError) as caught:
        await client.get_price_list(managed=False, drive_type="ssd")

    assert str(caught.value) == AUTH_ERROR_MESSAGE
    assert AUTH_ERROR_MESSAGE == (
        "Hostwinds refused the API key (expired, or this host's IPv4 address is not on the key's allow-list)"
    )
    assert api.call_count == 1
    assert sleep.delays == []
    assert client.requests == {("get_price_list", "auth_error"): 1}


async def test_auth_error_is_detected_by_body_whatever_the_status(
    api: respx.Route, client: HostwindsClient
) -> None:
    """An "Authorization" error envelope is an auth error even when it comes with HTTP 503."""
    api.mock(
        return_value=httpx.Response(
            503, text=json.dumps([{"result": "error", "action": "Authorization", "message": "Denied"}])
        )
    )

    with pytest.raises(HostwindsAuthError):
        await client.get_instances()

    assert api.call_count == 1


# Retries


async def test_503_then_200_is_retried(
    api: respx.Route, client: HostwindsClient, sleep: RecordingSleep
) -> None:
    """A 503 is retried once after a backoff delay, and the second answer is returned."""
    api.mock(side_effect=[httpx.Response(503, text="<html>busy</html>"), ok({"success": []})])

    assert await client.get_instances() == []

    assert api.call_count == 2
    assert len(sleep.delays) == 1
    assert 0 <= sleep.delays[0] <= 0.5
    assert client.requests == {("get_instances", "transient"): 1, ("get_instances", "ok"): 1}


async def test_429_retry_after_seconds_is_honoured(
    api: respx.Route, client: HostwindsClient, sleep: RecordingSleep
) -> None:
    """A 429 with "Retry-After: 3" makes the client wait exactly 3 seconds before retrying."""
    api.mock(side_effect=[httpx.Response(429, headers={"Retry-After": "3"}), ok({"success": {}})])

    assert await client.get_billingcycle_prices(5) == {}

    assert sleep.delays == [3]


async def test_retry_after_http_date_is_capped(
    api: respx.Route, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    """A Retry-After HTTP-date an hour away is honoured only up to retry_after_max."""
    client = HostwindsClient(
        http, API_KEY, url=URL, requests_per_second=None, retry_after_max=20.0, sleep=sleep
    )
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    api.mock(side_effect=[httpx.Response(429, headers={"Retry-After": later}), ok([])])

    await client.get_instances()

    assert sleep.delays == [20.0]


async def test_html_body_with_200_is_retried_then_transient_error(
    api: respx.Route, client: HostwindsClient, sleep: RecordingSleep
) -> None:
    """An HTML page sent with HTTP 200 is retried, and after 4 attempts a transient error names it."""
    api.mock(return_value=httpx.Response(200, text="<html><body>Maintenance</body></html>"))

    with pytest.raises(HostwindsTransientError) as caught:
        await client.get_instances()

    assert str(caught.value) == (
        "get_instances: Hostwinds did not answer after 4 attempts (last: a body that is not JSON (HTTP 200))"
    )
    assert api.call_count == 4
    assert len(sleep.delays) == 3
    assert client.requests == {("get_instances", "transient"): 4}


async def test_backoff_is_bounded_full_jitter(
    api: respx.Route, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    """Each retry waits a random delay between 0 and min(backoff_max, initial * 2**n)."""
    client = HostwindsClient(
        http, API_KEY, url=URL, requests_per_second=None, attempts=6, backoff_max=3.0, sleep=sleep
    )
    api.mock(return_value=httpx.Response(503))

    with pytest.raises(HostwindsTransientError, match=r"after 6 attempts \(last: HTTP 503\)$"):
        await client.get_price_list(managed=False, drive_type=None)

    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(sleep.delays) == len(ceilings)
    assert all(0 <= d <= c for d, c in zip(sleep.delays, ceilings, strict=True))


async def test_timeouts_are_retried(api: respx.Route, client: HostwindsClient, sleep: RecordingSleep) -> None:
    """Read timeouts and refused connections are retried like any transient failure."""
    api.mock(side_effect=[httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), ok([])])

    assert await client.get_instances() == []

    assert api.call_count == 3
    assert len(sleep.delays) == 2


async def test_persistent_timeout_names_the_last_cause(api: respx.Route, client: HostwindsClient) -> None:
    """A call that times out every time ends in a transient error naming the timeout."""
    api.mock(side_effect=httpx.ConnectTimeout("slow"))

    with pytest.raises(HostwindsTransientError) as caught:
        await client.get_instance(1)

    assert str(caught.value) == (
        "get_instance: Hostwinds did not answer after 4 attempts (last: timeout (ConnectTimeout))"
    )


async def test_other_4xx_is_a_response_error_without_retry(
    api: respx.Route, client: HostwindsClient, sleep: RecordingSleep
) -> None:
    """A 404 (or any 4xx but 429) is not retried and raises a response error with the status."""
    api.mock(return_value=httpx.Response(404, text="<html>Not Found</html>"))

    with pytest.raises(HostwindsResponseError, match=r"^get_instances: Hostwinds answered HTTP 404$"):
        await client.get_instances()

    assert api.call_count == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (httpx.Response(500), True),
        (httpx.Response(503), True),
        (httpx.Response(429), True),
        (httpx.Response(200), False),
        (httpx.Response(404), False),
        (httpx.ReadTimeout("t"), True),
        (httpx.ConnectError("c"), True),
        (httpx.TooManyRedirects("r"), False),
        (ValueError("v"), False),
    ],
)
def test_is_transient_classifies_outcomes(outcome: httpx.Response | Exception, expected: bool) -> None:
    """Only timeouts, transport errors, 429 and 5xx are worth repeating."""
    assert retry.is_transient(outcome) is expected


# The allow-list and the request


async def test_forbidden_action_raises_before_any_request(api: respx.Route, client: HostwindsClient) -> None:
    """An action that creates invoices is refused and nothing is sent."""
    api.mock(return_value=ok({"success": {}}))

    with pytest.raises(ForbiddenActionError, match="upgrade_instance"):
        await client.call("upgrade_instance", serviceid=1, rid=52)

    assert not api.called
    assert client.calls == {}
    assert client.requests == {}


async def test_price_list_form_carries_action_key_and_options(
    api: respx.Route, client: HostwindsClient
) -> None:
    """The POST is form-encoded with action, API, managed=0 and drive_type, and no key in the URL."""
    api.mock(return_value=ok({"success": []}))

    await client.get_price_list(managed=False, drive_type="ssd")

    request = api.calls.last.request
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form_of(request) == {
        "action": "get_price_list",
        "API": API_KEY,
        "managed": "0",
        "drive_type": "ssd",
    }
    assert API_KEY not in str(request.url)


async def test_price_list_without_drive_type_omits_it(api: respx.Route, client: HostwindsClient) -> None:
    """drive_type=None sends no drive_type field, and managed=True sends managed=1."""
    api.mock(return_value=ok({"success": []}))

    await client.get_price_list(managed=True, drive_type=None)

    assert form_of(api.calls.last.request) == {
        "action": "get_price_list",
        "API": API_KEY,
        "managed": "1",
    }


async def test_client_does_not_close_the_http_client(api: respx.Route, client: HostwindsClient) -> None:
    """The httpx client handed in stays open after calls and errors."""
    api.mock(side_effect=[ok([]), httpx.Response(404)])

    await client.get_instances()
    with pytest.raises(HostwindsResponseError):
        await client.get_instances()

    assert not client._http.is_closed


# Secrets


async def test_api_key_never_in_logs_exceptions_or_repr(
    api: respx.Route, client: HostwindsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key appears in no captured log entry, no exception text or traceback, and no repr."""
    # A fresh logger: one cached by an earlier structlog configuration would bypass capture_logs.
    monkeypatch.setattr(hostwinds, "_log", structlog.get_logger(hostwinds.__name__))
    api.mock(
        side_effect=[
            httpx.Response(503),
            httpx.ConnectError("refused"),
            httpx.Response(200, text="<html>oops</html>"),
            httpx.Response(503),
            ok([{"result": "error", "message": f"Bad key {API_KEY}"}]),
            ok([{"result": "error", "message": "Not Authorized!"}]),
        ]
    )
    texts: list[str] = []

    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(
                (HostwindsResponseError, HostwindsTransientError, HostwindsAuthError)
            ) as caught:
                await client.get_instances()
            texts.append("".join(traceback.format_exception(caught.value)))

    retries = [entry for entry in logs if entry["event"] == "hostwinds.retry"]
    assert [entry["attempt"] for entry in retries] == [1, 2, 3]
    assert set(retries[0]) >= {"action", "attempt", "cause", "delay"}
    assert "[redacted]" in texts[1]
    assert API_KEY not in repr(logs)
    assert all(API_KEY not in text for text in texts)
    assert API_KEY not in repr(client)
    assert API_KEY not in str(client)


async def test_password_and_configkey_never_reach_the_instance(
    api: respx.Route, client: HostwindsClient
) -> None:
    """Parsed instances hold neither the root password nor the configkey, by name or by value."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("instances_keyed_by_id.json")))

    instances = await client.get_instances()

    for instance in instances:
        dumped = dataclasses.asdict(instance)
        assert "password" not in dumped
        assert "configkey" not in dumped
        text = repr(dumped) + repr(instance)
        assert not any(secret in text for secret in PASSWORDS + CONFIG_KEYS)


async def test_malformed_instance_names_item_and_field_without_values(
    api: respx.Route, client: HostwindsClient
) -> None:
    """An item missing serviceid raises "item N: serviceid: Field required" and leaks no value."""
    item = json.loads(fixture_text("instances_bare_list.json"))[0]
    broken = {k: v for k, v in item.items() if k != "serviceid"}
    api.mock(return_value=ok({"success": [item, item, item, broken]}))

    with pytest.raises(HostwindsResponseError) as caught:
        await client.get_instances()

    assert str(caught.value) == "get_instances: item 3: serviceid: Field required"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


async def test_invalid_instance_value_never_appears_in_error_or_traceback(
    api: respx.Route, client: HostwindsClient
) -> None:
    """A wrongly typed field is reported by location only; its value and the password stay out."""
    item = json.loads(fixture_text("instances_bare_list.json"))[0]
    api.mock(return_value=ok([{**item, "serviceid": "Tr0ub4dor&3-root-password"}]))

    with pytest.raises(HostwindsResponseError) as caught:
        await client.get_instances()

    text = "".join(traceback.format_exception(caught.value))
    assert str(caught.value).startswith("get_instances: item 0: serviceid: Input should be a valid integer")
    assert "Tr0ub4dor" not in text
    assert "cfgkey" not in text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"success": "nope"}, "get_instances: expected a list or an object of items, got a string"),
        ({"success": 42}, "get_instances: expected a list or an object of items, got a number"),
        ({"success": None}, "get_instances: expected a list or an object of items, got null"),
        ([["not", "an", "object"]], "get_instances: item 0: expected an object, got a list"),
    ],
)
async def test_body_of_the_wrong_shape_is_a_response_error(
    api: respx.Route, client: HostwindsClient, body: Any, expected: str
) -> None:
    """A container that is not a list or an object, or an item that is not an object, fails loudly."""
    api.mock(return_value=ok(body))

    with pytest.raises(HostwindsResponseError) as caught:
        await client.get_instances()

    assert str(caught.value).startswith(expected)


async def test_get_instance_returns_the_asked_service(api: respx.Route, client: HostwindsClient) -> None:
    """get_instance sends serviceid and accepts the instance bare or as a container of one."""
    item = json.loads(fixture_text("instances_bare_list.json"))[0]
    api.mock(side_effect=[ok({"success": item}), ok({"success": {"1001": item}}), ok([item])])

    for _ in range(3):
        assert (await client.get_instance(1001)).serviceid == 1001

    assert form_of(api.calls.last.request)["serviceid"] == "1001"


async def test_get_instance_of_another_service_is_an_error(api: respx.Route, client: HostwindsClient) -> None:
    """An answer about a different service than asked is refused rather than priced."""
    item = json.loads(fixture_text("instances_bare_list.json"))[0]
    api.mock(return_value=ok({"success": item}))

    with pytest.raises(HostwindsResponseError, match="asked for service 2002, got service 1001"):
        await client.get_instance(2002)


# Prices


async def test_price_list_keeps_exact_cell_text(api: respx.Route, client: HostwindsClient) -> None:
    """JSON numbers keep their exact Decimal text (9.99, 29.97, -1) and strings stay as sent."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("price_list.json")))

    plans = await client.get_price_list(managed=False, drive_type="ssd")

    assert set(plans) == {101, 102}
    assert plans[101].name == "Unmanaged Linux VPS 1 CPU / 2 GB"
    assert dict(plans[101].prices) == {
        Cycle.MONTHLY: "9.99",
        Cycle.QUARTERLY: "29.97",
        Cycle.SEMIANNUALLY: "56.94",
        Cycle.ANNUALLY: "107.88",
        Cycle.BIENNIALLY: "203.76",
        Cycle.TRIENNIALLY: "-1.00",
    }
    assert dict(plans[102].prices) == {
        Cycle.MONTHLY: "19.99",
        Cycle.QUARTERLY: "29.97",
        Cycle.SEMIANNUALLY: "113.94",
        Cycle.ANNUALLY: "215.88",
        Cycle.BIENNIALLY: "-1",
        Cycle.TRIENNIALLY: "",
    }


async def test_price_list_keyed_by_id_with_cycle_spellings(api: respx.Route, client: HostwindsClient) -> None:
    """A price list keyed by id is read by its rows' ids, with "Annually"/"semi_annually" keys."""
    api.mock(return_value=httpx.Response(200, text=fixture_text("price_list_keyed_by_id.json")))

    plans = await client.get_price_list(managed=False, drive_type="ssd")

    assert dict(plans[101].prices) == {Cycle.MONTHLY: "9.99", Cycle.ANNUALLY: "107.88"}
    assert dict(plans[103].prices) == {Cycle.MONTHLY: "39.99", Cycle.SEMIANNUALLY: "227.94"}


@pytest.mark.parametrize(
    ("row", "path", "detail"),
    [
        ({"name": "no id", "monthly": "9.99"}, "answer[1]", "a row with no id"),
        ({"id": "abc", "monthly": "9.99"}, "answer[1].id", "Input should be a valid integer"),
        ({"id": True, "monthly": "9.99"}, "answer[1].id", "a boolean is not a plan id"),
        ("not a row", "answer[1]", "expected a price-list row or a group, got a string"),
    ],
)
async def test_price_row_without_usable_id_is_skipped_and_named(
    api: respx.Route, client: HostwindsClient, row: Any, path: str, detail: str
) -> None:
    """A row whose id is missing or not an integer is skipped with its path; the other rows are read."""
    api.mock(return_value=ok({"success": [{"id": 1, "monthly": "1.00"}, row]}))

    plans = await client.get_price_list(managed=False, drive_type="ssd")

    assert sorted(plans) == [1]
    assert [(u.path, u.custom) for u in plans.unreadable] == [(path, False)]
    assert plans.unreadable[0].detail.startswith(detail)


async def test_price_list_with_no_readable_row_fails_naming_the_first(
    api: respx.Route, client: HostwindsClient
) -> None:
    """Only when no row at all can be read does the list fail, naming where reading stopped."""
    api.mock(return_value=ok({"success": [{"id": "abc", "monthly": "9.99"}, {"id": 2, "monthly": "n/a"}]}))

    with pytest.raises(HostwindsResponseError) as caught:
        await client.get_price_list(managed=False, drive_type="ssd")

    assert str(caught.value) == (
        "get_price_list: no price-list row could be read; reading stopped at answer[0].id: "
        "Input should be a valid integer, unable to parse string as an integer"
    )


async def test_conflicting_rows_for_one_plan_price_neither(api: respx.Route, client: HostwindsClient) -> None:
    """Two rows with one id but different prices are both set aside rather than one being picked."""
    api.mock(
        return_value=ok(
            [{"id": 7, "monthly": "1.00"}, {"id": 7, "monthly": "2.00"}, {"id": 8, "monthly": "3.00"}]
        )
    )

    plans = await client.get_price_list(managed=False, drive_type="ssd")

    assert sorted(plans) == [8]
    assert plans.unreadable_row(7) is not None
    assert "two different rows for plan 7" in plans.unreadable[0].detail


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"success": {"monthly": "9.99", "quarterly": "29.97"}}', {"monthly": "9.99", "quarterly": "29.97"}),
        (
            '{"success": {"monthly": {"price": "9.99", "duedate": "2026-12-01"},'
            ' "Semi-Annually": {"price": 56.94}}}',
            {"monthly": "9.99", "semiannually": "56.94"},
        ),
        ('{"success": {"annually": {"total": "107.88"}}}', {"annually": "107.88"}),
        ('{"success": {"biennially": {"amount": 203.76}}}', {"biennially": "203.76"}),
        ('{"monthly": 9.99}', {"monthly": "9.99"}),
    ],
)
async def test_billing_cycle_prices_accepted_shapes(
    api: respx.Route, client: HostwindsClient, answer: str, expected: dict[str, str]
) -> None:
    """Plain cells, and objects holding price, total or amount, all become exact cell text."""
    api.mock(return_value=httpx.Response(200, text=answer))

    prices = await client.get_billingcycle_prices(1001)

    assert prices == {Cycle(name): text for name, text in expected.items()}
    assert form_of(api.calls.last.request)["serviceid"] == "1001"


@pytest.mark.parametrize("answer", ['{"success": {}}', '{"success": []}', "{}", "[]", '{"success": null}'])
async def test_billing_cycle_prices_empty_answers_mean_no_data(
    api: respx.Route, client: HostwindsClient, answer: str
) -> None:
    """An empty answer in any accepted shape means "no data for this service"."""
    api.mock(return_value=httpx.Response(200, text=answer))

    assert await client.get_billingcycle_prices(1001) == {}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"success": {"cycles": {"m": "9.99"}}}', "the answer names no billing cycle"),
        ('{"success": ["9.99"]}', "expected an object of cycle prices, got a list"),
        ('{"success": {"monthly": "9.99", "Monthly": "8.99"}}', "two different monthly prices"),
    ],
)
async def test_billing_cycle_prices_unknown_shape_fails_loudly(
    api: respx.Route, client: HostwindsClient, answer: str, expected: str
) -> None:
    """A non-empty answer that names no cycle, or names one twice, is an error, never "no data"."""
    api.mock(return_value=httpx.Response(200, text=answer))

    with pytest.raises(HostwindsResponseError, match=expected):
        await client.get_billingcycle_prices(1001)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("9.99"), "9.99"),
        (Decimal("29.97"), "29.97"),
        (Decimal("9.990"), "9.990"),
        (-1, "-1"),
        (0, "0"),
        ("-1.00", "-1.00"),
        (" 9.99 ", " 9.99 "),
        ("", ""),
        (None, ""),
        ({"price": "9.99", "duedate": "2026-12-01"}, "9.99"),
        ({"total": Decimal("107.88")}, "107.88"),
        ({"amount": 5}, "5"),
        ({"price": "9.99", "total": "9.99"}, "9.99"),
        ({"price": None, "total": "4.00"}, "4.00"),
        ({"price": "9.99", "total": "19.99"}, '{"price": "9.99", "total": "19.99"}'),
        ({"duedate": "2026-12-01"}, '{"duedate": "2026-12-01"}'),
        ({"price": {"value": "1"}}, '{"price": {"value": "1"}}'),
        ({}, "{}"),
        (True, "True"),
        (["9.99"], '["9.99"]'),
    ],
)
def test_price_cell_text_keeps_exact_text(value: object, expected: str) -> None:
    """Numbers become their Decimal text, strings stay, objects yield one agreed price field or JSON."""
    assert price_cell_text(value) == expected


async def test_json_nan_never_becomes_a_float(api: respx.Route, client: HostwindsClient) -> None:
    """A NaN or Infinity literal is kept as Decimal text that is no price: a row with only such
    cells is skipped as not a number, and beside a real price pricing rejects it."""
    api.mock(
        return_value=httpx.Response(
            200,
            text='[{"id": 1, "monthly": NaN, "annually": Infinity},'
            ' {"id": 2, "monthly": "5.00", "annually": NaN}]',
        )
    )

    plans = await client.get_price_list(managed=False, drive_type="ssd")

    assert [(u.key, u.path) for u in plans.unreadable] == [(1, "answer[0].monthly")]
    assert dict(plans[2].prices) == {Cycle.MONTHLY: "5.00", Cycle.ANNUALLY: "NaN"}


# Rate limit, concurrency and counters


async def test_rate_limiter_spaces_request_starts(
    api: respx.Route, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    """At 2 requests/second, concurrent callers' starts are reserved 0.5 s apart."""
    client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=2.0, sleep=sleep)
    api.mock(return_value=ok([]))

    await asyncio.gather(*(client.get_instances() for _ in range(4)))

    assert api.call_count == 4
    # The fake sleep does not advance the clock, so waits grow by one interval per caller.
    assert sleep.delays == pytest.approx([0.5, 1.0, 1.5], abs=0.05)


@pytest.mark.parametrize("rate", [None, 0, -1.0])
async def test_rate_limit_off_when_not_positive(
    api: respx.Route, http: httpx.AsyncClient, sleep: RecordingSleep, rate: float | None
) -> None:
    """requests_per_second of None, 0 or less disables client-side spacing."""
    client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=rate, sleep=sleep)
    api.mock(return_value=ok([]))

    await asyncio.gather(*(client.get_instances() for _ in range(3)))

    assert sleep.delays == []


async def test_concurrency_is_bounded(api: respx.Route, http: httpx.AsyncClient) -> None:
    """No more than max_concurrency requests are in flight at once."""
    client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None, max_concurrency=2)
    in_flight = peak = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return ok([])

    api.mock(side_effect=answer)

    await asyncio.gather(*(client.get_instances() for _ in range(6)))

    assert api.call_count == 6
    assert peak == 2


async def test_calls_and_requests_counters(api: respx.Route, client: HostwindsClient) -> None:
    """calls counts logical calls per action; requests counts HTTP requests by outcome."""
    api.mock(
        side_effect=[
            httpx.Response(503),
            ok([]),
            ok({"success": {"monthly": "9.99"}}),
            ok([{"result": "error", "message": "A valid serviceid is required."}]),
        ]
    )

    await client.get_instances()
    await client.get_billingcycle_prices(1)
    with pytest.raises(HostwindsResponseError):
        await client.get_billingcycle_prices(2)

    assert client.calls == {"get_instances": 1, "get_billingcycle_prices": 2}
    assert client.requests == {
        ("get_instances", "transient"): 1,
        ("get_instances", "ok"): 1,
        ("get_billingcycle_prices", "ok"): 1,
        ("get_billingcycle_prices", "error"): 1,
    }


async def test_constructor_rejects_impossible_limits(http: httpx.AsyncClient) -> None:
    """Zero attempts or zero concurrency would never send anything, so they are refused."""
    with pytest.raises(ValueError, match="attempts"):
        HostwindsClient(http, API_KEY, attempts=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        HostwindsClient(http, API_KEY, max_concurrency=0)


async def test_non_transport_http_error_is_a_response_error(
    api: respx.Route, client: HostwindsClient
) -> None:
    """An httpx error that is not a transport failure (too many redirects) is not retried."""
    api.mock(side_effect=httpx.TooManyRedirects("loop"))

    with pytest.raises(
        HostwindsResponseError, match=r"^get_instances: the request failed \(TooManyRedirects\)$"
    ):
        await client.get_instances()

    assert api.call_count == 1


async def test_params_cannot_override_action_or_key(api: respx.Route, client: HostwindsClient) -> None:
    """Passing action or API as a parameter is refused, so no call can swap the action or the key."""
    with pytest.raises(ValueError, match="set by the client"):
        await client.call("get_instances", API="other-key")

    assert not api.called


GROUPED_ROW_A = {"id": 101, "rid": 51, "name": "Fixed 1", "monthly": "9.99", "annually": "107.88"}
GROUPED_ROW_B = {"id": 301, "rid": 81, "name": "Custom 1", "monthly": "14.00", "promo": {"monthly": "7.00"}}


@pytest.mark.parametrize(
    "answer",
    [
        {"success": {"fixed": [GROUPED_ROW_A], "custom": [GROUPED_ROW_B]}},
        {
            "success": {
                "fixed_plans": {"101": GROUPED_ROW_A},
                "custom_plans": {"301": GROUPED_ROW_B},
                "count": 2,
            }
        },
        {"success": [{"plans": [GROUPED_ROW_A]}, {"plans": {"x": GROUPED_ROW_B}}]},
    ],
)
async def test_grouped_price_list_rows_are_found(
    api: respx.Route, client: HostwindsClient, answer: Any
) -> None:
    """Rows nested under group keys (fixed/custom, lists or objects) are read like a flat list."""
    api.mock(return_value=ok(answer))

    plans = await client.get_price_list(managed=False, drive_type="ssd")

    assert sorted(plans) == [101, 301]
    assert dict(plans[101].prices) == {Cycle.MONTHLY: "9.99", Cycle.ANNUALLY: "107.88"}
    assert dict(plans[301].prices) == {Cycle.MONTHLY: "14.00"}


async def test_plan_key_rid_keys_the_price_list_by_rid(api: respx.Route, client: HostwindsClient) -> None:
    """With plan_key "rid" the rows are keyed by their rid; a row without one cannot be joined."""
    api.mock(return_value=ok({"success": [GROUPED_ROW_A, GROUPED_ROW_B, {"id": 9, "monthly": "1.00"}]}))

    plans = await client.get_price_list(managed=False, drive_type="ssd", plan_key="rid")

    assert sorted(plans) == [51, 81]
    assert plans[51].id == 101
    assert plans[51].name == "Fixed 1"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"success": {"plans": {"total": 3, "page": "1"}}},
            "reading stopped at answer.plans.total: a number",
        ),
        (
            {"success": {"fixed": [{"id": 1, "ram": "2"}]}},
            "reading stopped at answer.fixed[0]: no cycle price",
        ),
        (
            {"success": {"fixed": ["a plan"]}},
            "reading stopped at answer.fixed[0]: expected a price-list row or a group",
        ),
        ({"success": "maintenance"}, "answer: expected a price-list row or a group, got a string"),
    ],
)
async def test_price_list_in_no_known_shape_names_where_reading_stopped(
    api: respx.Route, client: HostwindsClient, answer: Any, expected: str
) -> None:
    """A non-empty price list with no readable row fails loudly, naming the path, never as 'no plans'."""
    api.mock(return_value=ok(answer))

    with pytest.raises(HostwindsResponseError) as caught:
        await client.get_price_list(managed=False, drive_type="ssd")

    assert expected in str(caught.value)


async def test_sanitised_body_keeps_the_shape_and_drops_every_secret(
    api: respx.Route, client: HostwindsClient
) -> None:
    """Passwords, configkey, root passwords and any text holding the key are gone; the rest is as sent."""
    body = {
        "success": [
            {
                "serviceid": 5,
                "password": PASSWORDS[0],
                "rootpass": PASSWORDS[1],
                "root_password": PASSWORDS[2],
                "configkey": CONFIG_KEYS[0],
                "note": f"key {API_KEY}",
                "extra": {"vnc_password": "vnc-secret-1", "disk": "50", "price": Decimal("9.990")},
            }
        ]
    }
    api.mock(return_value=httpx.Response(200, text=json.dumps(body, default=str).replace('"9.990"', "9.990")))

    clean = await client.sanitised_body("get_instances")

    assert clean == {"success": [{"serviceid": 5, "extra": {"disk": "50", "price": Decimal("9.990")}}]}
    text = repr(clean)
    for secret in (*PASSWORDS, CONFIG_KEYS[0], API_KEY, "vnc-secret-1"):
        assert secret not in text


# The retry policy, apart from the call


@pytest.mark.parametrize(
    "message",
    ["Rate limit exceeded", "Too many requests, slow down", "Please wait a moment", "TRY AGAIN later"],
)
async def test_slow_down_envelope_is_retried_with_backoff(
    api: respx.Route, client: HostwindsClient, sleep: RecordingSleep, message: str
) -> None:
    """An HTTP-200 error envelope saying the caller goes too fast is waited out and retried."""
    envelope = [{"result": "error", "action": "get_instances", "message": message}]
    api.mock(side_effect=[ok(envelope), ok({"success": []})])

    assert await client.get_instances() == []

    assert api.call_count == 2
    assert len(sleep.delays) == 1
    assert 0 <= sleep.delays[0] <= 0.5
    assert client.requests == {("get_instances", "transient"): 1, ("get_instances", "ok"): 1}


async def test_slow_down_envelope_gives_up_after_every_attempt(
    api: respx.Route, client: HostwindsClient, sleep: RecordingSleep
) -> None:
    """A rate-limit envelope on every attempt ends as a transient error, never as a bad answer."""
    api.mock(return_value=ok([{"result": "error", "message": "rate limit reached"}]))

    with pytest.raises(HostwindsTransientError, match="after 4 attempts"):
        await client.get_instances()

    assert api.call_count == 4
    assert len(sleep.delays) == 3


async def test_other_error_envelopes_are_not_retried(
    api: respx.Route, client: HostwindsClient, sleep: RecordingSleep
) -> None:
    """An error envelope that does not ask to slow down is final at once."""
    api.mock(return_value=ok([{"result": "error", "message": "Invalid serviceid"}]))

    with pytest.raises(HostwindsResponseError, match="Invalid serviceid"):
        await client.get_billingcycle_prices(5)

    assert api.call_count == 1
    assert sleep.delays == []


def test_policy_gives_up_on_the_last_attempt_and_on_a_refused_key() -> None:
    """RetryPolicy.after answers a delay only for a transient outcome before the last attempt."""
    policy = retry.RetryPolicy(attempts=3, backoff_initial=1.0, backoff_max=2.0)
    busy = httpx.Response(503)
    assert policy.after(1, busy) is not None
    assert 0 <= (policy.after(2, busy) or 0) <= 2.0
    assert policy.after(3, busy) is None
    assert policy.after(1, httpx.Response(400)) is None
    refused = [{"result": "error", "action": "authorization", "message": "Not authorized, please try again"}]
    assert policy.after(1, httpx.Response(200), refused) is None
    assert policy.after(1, httpx.Response(429, headers={"Retry-After": "7"})) == 7
