"""Settings that made cost-sync hang, crash or leak are refused at load time, one line, exit 2."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cost_sync.cli import main as cli
from cost_sync.errors import ConfigError
from cost_sync.settings import Settings, load_settings


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"COST_SYNC_HOSTWINDS_TIMEOUT_SECONDS": "inf"}, "hostwinds.timeout_seconds"),
        ({"COST_SYNC_HOSTWINDS_TIMEOUT_SECONDS": "nan"}, "hostwinds.timeout_seconds"),
        ({"COST_SYNC_HOSTWINDS_TIMEOUT_SECONDS": "100000"}, "hostwinds.timeout_seconds"),
        ({"COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "1e-9"}, "hostwinds.requests_per_second"),
        ({"COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "inf"}, "hostwinds.requests_per_second"),
        ({"COST_SYNC_HOSTWINDS_MAX_RESPONSE_BYTES": "10"}, "hostwinds.max_response_bytes"),
        ({"COST_SYNC_DATABASE_LOCK_TIMEOUT_SECONDS": "inf"}, "database.lock_timeout_seconds"),
        ({"COST_SYNC_SHUTDOWN_GRACE_SECONDS": "inf"}, "sync.shutdown_grace_seconds"),
        ({"COST_SYNC_HOSTWINDS_URL": "http://clients.hostwinds.com/cloud/api.php"}, "hostwinds.url"),
        ({"COST_SYNC_HOSTWINDS_URL": "https://clients.hostwinds.com:99999/api.php"}, "hostwinds.url"),
        ({"COST_SYNC_DATABASE_URL": "postgresql://app:PW-x@db:99999/penguin"}, "database.url"),
    ],
)
def test_unsafe_values_are_refused_naming_the_setting(env: dict[str, str], names: str) -> None:
    """inf, NaN, a near-zero rate, an http:// Hostwinds host, a port over 65535: one ConfigError."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    assert names in str(caught.value)
    assert "PW-x" not in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:9000"])
def test_http_is_accepted_for_loopback_hosts(host: str) -> None:
    """The sandbox on 127.0.0.1 over http:// keeps working: the key never leaves the machine."""
    url = f"http://{host}/cloud/api.php"
    assert load_settings(None, {"COST_SYNC_HOSTWINDS_URL": url}).hostwinds.url == url


def test_http_off_loopback_needs_the_explicit_allowance() -> None:
    """An http:// sandbox in another container works only with hostwinds.allow_http = true."""
    env = {"COST_SYNC_HOSTWINDS_URL": "http://sandbox:8080/cloud/api.php"}
    with pytest.raises(ConfigError, match="cleartext"):
        load_settings(None, env)
    allowed = load_settings(None, {**env, "COST_SYNC_HOSTWINDS_ALLOW_HTTP": "true"})
    assert allowed.hostwinds.url == env["COST_SYNC_HOSTWINDS_URL"]


def test_database_port_out_of_range_is_exit_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Port 99999 in the database URL is a settings error (exit 2, one line, no password), not a traceback."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", "postgresql://app:PW-s3cr3t@127.0.0.1:99999/db")
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", "k")
    assert cli.main(["--once"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("cost-sync: error: setting database.url")
    assert "65535" in err[0]
    assert "PW-s3cr3t" not in err[0]


def test_override_ids_are_trimmed_and_lower_cased() -> None:
    """An override for " 1234567" or an upper-case UUID names the row its trimmed, lower-case id names."""
    settings = Settings(overrides={" 1234567 ": "12.50", "ABCDEF01-0000-4000-8000-000000000001": "3"})
    assert settings.overrides == {
        "1234567": Decimal("12.50"),
        "abcdef01-0000-4000-8000-000000000001": Decimal("3.00"),
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"1234567": "0.00"}, "more than 0.00"),
        ({"1234567": 0}, "more than 0.00"),
        ({"1234567": "1.00", " 1234567": "2.00"}, "same instance"),
        ({"  ": "1.00"}, "empty key"),
    ],
)
def test_zero_or_ambiguous_overrides_are_refused(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    """An override of 0.00 (unknown is never zero) or two overrides naming one row is a ConfigError."""
    lines = "".join(f'"{key}" = {json.dumps(value)}\n' for key, value in overrides.items())
    path = tmp_path / "c.toml"
    path.write_text("[overrides]\n" + lines)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, {})
