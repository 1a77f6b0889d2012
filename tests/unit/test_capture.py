"""Capture files and the replay server, without a database: what is written, refused and served."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from cost_sync.domain.models import Cycle
from cost_sync.hostwinds.capture import (
    MANIFEST,
    Answer,
    CaptureError,
    ReplayServer,
    answer_key,
    load_capture,
    write_capture,
)
from cost_sync.hostwinds.client import HostwindsClient

KEY = "capture-test-key-8d7c6b5a"


def answers() -> list[Answer]:
    """A small account: two instances, one price list, one service's cycle prices."""
    return [
        Answer(
            "get_instances",
            {},
            {"success": [{"serviceid": 1, "product_id": 101, "billingcycle": "Monthly", "disk_type": "ssd"}]},
        ),
        Answer(
            "get_price_list",
            {"managed": "0", "drive_type": "ssd"},
            {"success": {"fixed": [{"id": 101, "name": "P", "monthly": Decimal("9.990")}]}},
        ),
        Answer("get_billingcycle_prices", {"serviceid": "1"}, {}),
    ]


def test_capture_writes_each_answer_and_a_manifest_with_exact_numbers(tmp_path: Path) -> None:
    """Each answer becomes a file named for its action and parameters; a number keeps its digits."""
    manifest = json.loads(write_capture(tmp_path, answers(), secrets=[KEY]).read_text())
    assert [a["file"] for a in manifest["answers"]] == [
        "get_instances.json",
        "get_price_list.drive_type-ssd.managed-0.json",
        "get_billingcycle_prices.serviceid-1.json",
    ]
    assert "password" in manifest["deny_list"]
    assert '"monthly": 9.990' in (tmp_path / "get_price_list.drive_type-ssd.managed-0.json").read_text()


def test_capture_holding_a_secret_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """An answer whose text contains a named secret stops the capture before any file is written."""
    leaky = [*answers(), Answer("get_billingcycle_prices", {"serviceid": "2"}, {"note": f"x{KEY}x"})]
    with pytest.raises(CaptureError, match="still holds a secret"):
        write_capture(tmp_path / "out", leaky, secrets=[KEY])
    assert not (tmp_path / "out").exists()


def test_load_capture_names_a_directory_without_a_manifest(tmp_path: Path) -> None:
    """Replaying a directory that is not a capture fails naming the missing manifest."""
    with pytest.raises(CaptureError, match=MANIFEST):
        load_capture(tmp_path)


def test_answer_key_fills_in_hostwinds_defaults() -> None:
    """A price list asked without managed or drive_type matches the one captured with 1 and ssd."""
    assert answer_key("get_price_list", {}) == answer_key(
        "get_price_list", {"managed": "1", "drive_type": "SSD"}
    )
    assert answer_key("get_price_list", {"managed": "0"}) != answer_key("get_price_list", {})


async def test_replay_serves_the_captured_answers_to_the_real_client(tmp_path: Path) -> None:
    """The client reads the replayed answers as it read the originals; an uncaptured ask is an error."""
    write_capture(tmp_path, answers())
    async with ReplayServer(load_capture(tmp_path)) as replay, httpx.AsyncClient() as http:
        client = HostwindsClient(http, "whatever", url=replay.url, requests_per_second=None)
        instances = await client.get_instances()
        plans = await client.get_price_list(managed=False, drive_type="ssd")
        prices = await client.get_billingcycle_prices(1)
        refused = await http.post(replay.url, data={"action": "get_billingcycle_prices", "serviceid": "2"})
        write = await http.post(replay.url, data={"action": "upgrade_instance", "serviceid": "1"})
    assert [i.serviceid for i in instances] == [1]
    assert plans[101].prices[Cycle.MONTHLY] == "9.990"
    assert prices == {}
    assert refused.json()[0]["result"] == "error"
    assert write.json()[0]["message"] == "Invalid Action."
    assert replay.missing == [("get_billingcycle_prices", (("serviceid", "2"),))]
