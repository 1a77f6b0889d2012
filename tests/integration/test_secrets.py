"""Secrets in what Hostwinds sends back, on real PostgreSQL: the key in every spelling it travels in,
secret fields under every name on the one list, secrets in free text. None reaches a log line, the
ledger, the row state, the history, ``report``/``--csv``, ``explain`` or ``doctor --json``."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus

import asyncpg
import httpx
import pytest
import respx
from structlog.testing import capture_logs

from cost_sync.cli import main as cli
from cost_sync.errors import HostwindsResponseError
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sandbox import Fleet, SandboxServer, load_demo_fleet
from cost_sync.run.sync import run_once
from cost_sync.settings import Settings
from tests.integration.conftest import instance, seed, values

pytestmark = pytest.mark.db

URL = "https://hostwinds.test/cloud/api.php"
#: A key with characters every encoding spells differently.
KEY = "hwKey+/0a1b2c=3d&e\u00e9-Secret9"

#: The spellings the key was seen in, leaked through an echoing error (defect 17).
SPELLINGS = {
    "raw": KEY,
    "form": quote_plus(KEY, safe=""),
    "percent_upper": quote(KEY, safe=""),
    "percent_lower": quote(KEY, safe="").lower(),
    "percent_all_upper": quote(KEY, safe="").upper(),
    "upper_cased": KEY.upper(),
    "base64": base64.b64encode(KEY.encode()).decode(),
    "base64_in_header": base64.b64encode(f"user:{KEY}".encode()).decode(),
    "json_escaped": json.dumps(KEY).strip('"').replace("/", "\\/"),
}

#: Secret field names from both of the two lists that once existed, and the ones seen in captures.
SECRET_NAMES = [
    "password",
    "rootpass",
    "configkey",
    "privatekey",
    "sshkey",
    "key",
    "api",
    "passphrase",
    "api_token",
    "access_token",
    "root_pw",
    "vncpass",
    "secret",
]


def _leaks(text: str) -> list[str]:
    found = [name for name, spelling in SPELLINGS.items() if spelling in text]
    found += [name for name in SECRET_NAMES if f"VALUE-OF-{name}" in text]
    return found


class Echoing:
    """A Hostwinds stand-in (through respx) that echoes the key back in every spelling."""

    def __init__(self) -> None:
        # Service 2's plan is not on the price list, so its failed answer leaves it unpriced (no
        # fallback), and the echoed error text reaches the places an unpriced reason is kept.
        self.instances: list[dict[str, Any]] = [instance(1), instance(2, product_id=102), instance(3)]
        self.fail_instances = False
        self.forms: list[dict[str, str]] = []

    def echo(self) -> str:
        spelled = " ".join(f"{name}={value}" for name, value in SPELLINGS.items())
        fields = " ".join(f"{name}=VALUE-OF-{name}" for name in SECRET_NAMES)
        return f"bad request {spelled} {fields}"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        if form.get("API") != KEY:
            return _json([{"result": "error", "action": "Authorization", "message": "Not Authorized!"}])
        action = form["action"]
        if action == "get_instances":
            if self.fail_instances:
                return _json([{"result": "error", "action": action, "message": self.echo()}])
            return _json({"success": self.instances})
        if action == "get_price_list":
            return _json({"success": [{"id": 101, "name": "plan 101", "monthly": "9.99"}]})
        if action == "get_billingcycle_prices":
            serviceid = int(form["serviceid"])
            if serviceid == 2:
                return _json([{"result": "error", "action": action, "message": self.echo()}])
            if serviceid == 3:
                cell = {name: f"VALUE-OF-{name}" for name in SECRET_NAMES}
                return _json({"success": {"monthly": cell}})
            return _json({"success": {"monthly": "9.99"}})
        return _json([{"result": "error", "action": action, "message": "Invalid Action."}])


def _json(body: Any) -> httpx.Response:
    return httpx.Response(200, text=json.dumps(body))


@pytest.fixture
def echoing() -> Iterator[Echoing]:
    fake = Echoing()
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=fake)
        yield fake


async def no_sleep(_: float) -> None:
    return None


def _settings() -> Settings:
    return Settings.model_validate({"hostwinds": {"api_key": KEY, "url": URL}})


async def _tables(conn: asyncpg.Connection) -> str:
    parts = []
    for table in (
        "cost_sync_runs",
        "cost_sync_row_state",
        "cost_sync_history",
        "cost_sync_price_observations",
        "cost_sync_price_lists",
    ):
        parts.append(repr([dict(r) for r in await conn.fetch(f"SELECT * FROM {table}")]))
    return "\n".join(parts)


def _cli(monkeypatch: pytest.MonkeyPatch, db_url: str, argv: list[str]) -> Callable[[], int]:
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_ATTEMPTS", "1")
    return lambda: cli.main(argv)


async def test_the_key_in_any_spelling_and_secret_fields_reach_nothing(
    echoing: Echoing,
    pool: asyncpg.Pool,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An error echoing the key form-encoded, percent-encoded in both cases, in base64 and
    JSON-escaped, plus every secret field name on the list: logs, ledger, row state, report --csv,
    report, doctor --json all stay clean (defect 17 and the one list of secret names)."""
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", None), ("2", "active", "5.00"), ("3", "active", "6.00")])
    async with httpx.AsyncClient() as http:
        client = HostwindsClient(http, KEY, url=URL, requests_per_second=None, sleep=no_sleep, attempts=1)
        with capture_logs() as logs:
            result = await run_once(client=client, pool=pool, settings=_settings())
            echoing.fail_instances = True
            with pytest.raises(HostwindsResponseError) as failed:
                await run_once(client=client, pool=pool, settings=_settings())
    # The first run priced 1 and kept 2 (its answer unavailable) and 3 (its cell not a price).
    assert result.report.unpriced_by_reason == {"cycle_prices_unavailable": 1, "invalid_price": 1}
    assert await values(conn) == {"1": Decimal("9.99"), "2": Decimal("5.00"), "3": Decimal("6.00")}
    # The defect as found: the key was sent form-encoded and came back in the error.
    assert echoing.forms[0]["API"] == KEY
    assert _leaks(str(failed.value)) == []
    assert "[redacted]" in str(failed.value)
    assert _leaks(repr(logs)) == []
    assert any(e["event"] == "sync.cycle_prices_unavailable" for e in logs)
    tables = await _tables(conn)
    assert "[redacted]" in tables
    assert _leaks(tables) == []
    await conn.close()

    outputs = []
    for argv in (["report", "--csv"], ["report"], ["report", "--json"], ["doctor", "--json"], ["--once"]):
        code = await asyncio.to_thread(_cli(monkeypatch, db_url, argv))
        captured = capsys.readouterr()
        outputs.append((argv, code, captured.out + captured.err))
    for argv, _code, text in outputs:
        assert _leaks(text) == [], argv
    doctor = next(text for argv, _, text in outputs if argv[0] == "doctor")
    assert "[redacted]" in doctor
    report_csv = next(text for argv, _, text in outputs if argv == ["report", "--csv"])
    assert "cycle_prices_unavailable" in report_csv


def _cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str, url: str, key: str) -> None:
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", key)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    monkeypatch.setenv("COST_SYNC_LOG_FORMAT", "json")


FREE_TEXT_SECRETS = ("hunter2-root", "pw-secret-1", "cfg-in-name")


def _poisoned_fleet() -> Fleet:
    """The demo fleet with secrets in one product name and a 10 MiB product name on another."""
    fleet = load_demo_fleet()
    instances = [dict(i) for i in fleet.instances]
    instances[0]["product_name"] = (
        f"Plan {fleet.api_key} rootpass=hunter2-root password: pw-secret-1 configkey=cfg-in-name"
    )
    instances[1]["product_name"] = "Big " + "x" * (10 * 1024 * 1024)
    return dataclasses.replace(fleet, instances=instances)


async def test_secrets_and_huge_text_in_product_names_are_redacted_and_cut_everywhere(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defects 3 and 4 as found, through the sandbox: a product name carrying the key, rootpass=
    and password:, and a 10 MiB product name. Neither the secrets nor the long text reach a log
    line (sync.plan_name_disagrees among them), cost_sync_history, report, report --csv or explain;
    every log line stays short."""
    fleet = _poisoned_fleet()
    conn = await asyncpg.connect(db_url)
    ids = [str(i["serviceid"]) for i in fleet.instances[:3]]
    await seed(conn, [(sid, "active", None) for sid in ids])
    outputs: list[tuple[list[str], int, str, str]] = []
    async with SandboxServer(fleet) as sandbox:
        _cli_env(monkeypatch, db_url, sandbox.url, fleet.api_key)
        for argv in (["--once"], ["--once", "--full"], ["report"], ["report", "--csv"], ["explain", ids[0]]):
            code = await asyncio.to_thread(cli.main, argv)
            captured = capsys.readouterr()
            outputs.append((argv, code, captured.out, captured.err))
    history = [r["product_name"] for r in await conn.fetch("SELECT product_name FROM cost_sync_history")]
    await conn.close()

    assert [code for _, code, _, _ in outputs] == [0, 0, 0, 0, 0]
    everything = "\n".join(out + err for _, _, out, err in outputs) + repr(history)
    for secret in (fleet.api_key, *FREE_TEXT_SECRETS):
        assert secret not in everything
    assert "x" * 300 not in everything
    assert history
    assert all(name is None or len(name) <= 200 for name in history)
    assert any(name and "rootpass=[redacted]" in name for name in history)
    log_lines = [line for _, _, _, err in outputs for line in err.splitlines()]
    assert any('"sync.plan_name_disagrees"' in line for line in log_lines)
    assert max(len(line) for line in log_lines) < 4000


async def test_history_written_before_cleaning_is_redacted_when_shown(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A product name stored with a secret and 10,000 characters (history older than the fix):
    report, report --csv and explain show it redacted and short."""
    fleet = load_demo_fleet()
    conn = await asyncpg.connect(db_url)
    first = str(fleet.instances[0]["serviceid"])
    await seed(conn, [(first, "active", None)])
    outputs = []
    async with SandboxServer(fleet) as sandbox:
        _cli_env(monkeypatch, db_url, sandbox.url, fleet.api_key)
        assert await asyncio.to_thread(cli.main, ["--once"]) == 0
        await conn.execute(
            "UPDATE cost_sync_history SET product_name = $1",
            "Old plan rootpass=hunter2-old password: pw-old " + "z" * 10_000,
        )
        for argv in (["report"], ["report", "--csv"], ["report", "--json"], ["explain", first]):
            capsys.readouterr()
            assert await asyncio.to_thread(cli.main, argv) == 0
            outputs.append(capsys.readouterr().out)
    await conn.close()
    text = "\n".join(outputs)
    assert "Old plan rootpass=[redacted]" in text
    assert "hunter2-old" not in text
    assert "pw-old" not in text
    assert "z" * 300 not in text
