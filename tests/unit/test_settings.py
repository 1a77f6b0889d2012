"""Settings: TOML file, COST_SYNC_* variables over it, one clear error per bad setting, no leaks."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cost_sync.cli import main as cli
from cost_sync.domain.models import Cycle
from cost_sync.errors import ConfigError
from cost_sync.settings import load_settings

ISSUE_EXAMPLE = """
[hostwinds]
url = "https://clients.hostwinds.com/cloud/api.php"
managed = false              # price lists are asked with managed=0
requests_per_second = 2.0
timeout_seconds = 30
[sync]
schedule = "17 * * * *"
statuses = ["active", "provisioning", "scheduled_decommission"]
[overrides]                  # Finance overrides: hostwinds_instance_id = monthly USD
"1234567" = "12.50"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cost-sync.toml"
    path.write_text(text)
    return path


def test_documented_file_shape_loads(tmp_path: Path) -> None:
    """The file shape the project documents loads with every value typed."""
    settings = load_settings(write(tmp_path, ISSUE_EXAMPLE), {})
    assert settings.hostwinds.managed is False
    assert settings.hostwinds.requests_per_second == 2.0
    assert settings.sync.schedule == "17 * * * *"
    assert settings.overrides == {"1234567": Decimal("12.50")}


def test_example_file_documents_every_setting() -> None:
    """config/cost-sync.example.toml loads and names every key of every section."""
    example = Path(__file__).parents[2] / "config" / "cost-sync.example.toml"
    text = example.read_text()
    settings = load_settings(example, {})
    for section in ("hostwinds", "database", "sync", "admin", "log", "attribution"):
        for key in type(getattr(settings, section)).model_fields:
            assert f"{key} =" in text, f"{section}.{key} is not documented"


def test_environment_overrides_file(tmp_path: Path) -> None:
    """COST_SYNC_* variables win over the file, with the documented names."""
    env = {
        "COST_SYNC_HOSTWINDS_URL": "http://127.0.0.1:8080/cloud/api.php",
        "COST_SYNC_SCHEDULE": "*/5 * * * *",
        "COST_SYNC_DATABASE_URL": "postgresql://app@db:5432/penguin",
        "COST_SYNC_HOSTWINDS_API_KEY": "k",
        "COST_SYNC_STATUSES": "active,provisioning",
    }
    settings = load_settings(write(tmp_path, ISSUE_EXAMPLE), env)
    assert settings.hostwinds.url == "http://127.0.0.1:8080/cloud/api.php"
    assert settings.sync.schedule == "*/5 * * * *"
    assert settings.sync.statuses == ["active", "provisioning"]
    assert settings.database.url is not None
    assert settings.hostwinds.timeout_seconds == 30


def test_config_file_from_environment(tmp_path: Path) -> None:
    """COST_SYNC_CONFIG names the file when --config is not given."""
    path = write(tmp_path, '[sync]\nschedule = "0 3 * * *"\n')
    assert load_settings(None, {"COST_SYNC_CONFIG": str(path)}).sync.schedule == "0 3 * * *"


def test_override_written_as_toml_number_stays_exact(tmp_path: Path) -> None:
    """An override written as a bare TOML number is read as an exact Decimal, not a float."""
    settings = load_settings(write(tmp_path, '[overrides]\n"42" = 10.10\n"43" = 7\n'), {})
    assert settings.overrides == {"42": Decimal("10.10"), "43": Decimal("7.00")}


@pytest.mark.parametrize(
    ("text", "env", "names"),
    [
        ("[hostwinds]\nurll = 'x'\n", {}, "hostwinds.urll"),
        ("[nope]\n", {}, "nope"),
        ("[sync]\nschedule = '61 * * * *'\n", {}, "sync.schedule"),
        ("[sync]\nschedule = 'every hour'\n", {}, "sync.schedule"),
        ("[overrides]\n'1' = '-1.00'\n", {}, "overrides.1"),
        ("[overrides]\n'1' = '1.005'\n", {}, "overrides.1"),
        ("[overrides]\n'1' = 'twelve'\n", {}, "overrides.1"),
        ("[overrides]\n'1' = true\n", {}, "overrides.1"),
        ("[hostwinds]\nurl = 'ftp://example.com/api.php'\n", {}, "hostwinds.url"),
        ("[sync]\nstatuses = ['active', 'retired']\n", {}, "sync.statuses"),
        ("", {"COST_SYNC_HOSTWINDS_URL": "clients.hostwinds.com"}, "COST_SYNC_HOSTWINDS_URL"),
        ("", {"COST_SYNC_SCHEDUEL": "* * * * *"}, "COST_SYNC_SCHEDUEL"),
        ("", {"COST_SYNC_DATABASE_URL": "mysql://x@y/z"}, "database.url"),
        ("[admin]\nlisten = '9464'\n", {}, "admin.listen"),
    ],
)
def test_bad_setting_names_the_setting(tmp_path: Path, text: str, env: dict[str, str], names: str) -> None:
    """Each kind of bad setting is one ConfigError (exit code 2) that names the setting."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env)
    assert names in str(caught.value)
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    """A file that is not TOML is reported with its path and the line."""
    path = write(tmp_path, '[sync]\nstatuses = ["active"]\nschedule = "0 * * * *\n')
    with pytest.raises(ConfigError, match=r"cost-sync\.toml.*line 3"):
        load_settings(path, {})


def test_secrets_never_shown(tmp_path: Path) -> None:
    """The API key, the database password and the admin token appear in no repr and no error."""
    env = {
        "COST_SYNC_HOSTWINDS_API_KEY": "KEY-0123456789",
        "COST_SYNC_DATABASE_URL": "postgresql://app:PW-s3cr3t@db/penguin",
        "COST_SYNC_ADMIN_TOKEN": "TOKEN-abcdef",
    }
    settings = load_settings(None, env)
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("KEY-0123456789", "PW-s3cr3t", "TOKEN-abcdef"):
        assert secret not in shown
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {**env, "COST_SYNC_DATABASE_URL": "mysql://app:PW-s3cr3t@db/x"})
    assert "PW-s3cr3t" not in str(caught.value)


def test_cli_bad_setting_exits_2_before_any_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad setting stops `cost-sync migrate` with exit 2 and one line, before connecting."""
    monkeypatch.setenv("COST_SYNC_SCHEDULE", "not cron")
    # Port 1 would refuse a connection (exit 1): exit 2 proves nothing was attempted.
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", "postgresql://x@127.0.0.1:1/db")
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "sync.schedule" in err[0]


def test_cli_unknown_flag_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown flag prints usage and exits 2."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["--no-such-flag"])
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_cycle_aliases_from_a_toml_table_and_plan_key_from_the_environment(tmp_path: Path) -> None:
    """[hostwinds.cycle_aliases] maps spellings (compared as cycles are) to cycles; plan_key from env."""
    path = tmp_path / "cost-sync.toml"
    path.write_text(
        '[hostwinds]\nmanaged = false\n\n[hostwinds.cycle_aliases]\n"Bi-Annually" = "Semi-Annually"\n'
    )
    settings = load_settings(path, {"COST_SYNC_HOSTWINDS_PLAN_KEY": "rid"})
    assert settings.hostwinds.cycle_aliases == {"biannually": Cycle.SEMIANNUALLY}
    assert settings.hostwinds.plan_key == "rid"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"Monthly": "annually"}', "'Monthly' already names the monthly cycle"),
        ('{"Bi-Annually": "fortnightly"}', "'fortnightly' is not a billing cycle"),
        ("Bi-Annually=semiannually", "must be a JSON object"),
    ],
)
def test_a_bad_cycle_alias_names_the_setting(value: str, message: str) -> None:
    """An alias to no cycle, one re-pointing a known spelling, or non-JSON env is a ConfigError."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"COST_SYNC_HOSTWINDS_CYCLE_ALIASES": value})
    assert "hostwinds.cycle_aliases (from COST_SYNC_HOSTWINDS_CYCLE_ALIASES)" in str(caught.value)
    assert message in str(caught.value)


def test_every_problem_is_reported_in_one_error(tmp_path: Path) -> None:
    """An unknown variable, a bad file value and a bad variable value come back together."""
    path = write(tmp_path, "[hostwinds]\nattempts = 0\n")
    env = {"COST_SYNC_BOGUS": "1", "COST_SYNC_SCHEDULE": "hourly", "COST_SYNC_LOG_LEVEL": "loud"}
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env)
    message = str(caught.value)
    assert message.startswith("4 settings need attention")
    for name in ("COST_SYNC_BOGUS", "hostwinds.attempts", "sync.schedule", "log.level"):
        assert name in message


def test_log_settings_come_from_the_environment() -> None:
    """COST_SYNC_LOG_LEVEL and COST_SYNC_LOG_FORMAT are settings, case-insensitive; unset format is None."""
    settings = load_settings(None, {"COST_SYNC_LOG_LEVEL": "DEBUG", "COST_SYNC_LOG_FORMAT": "Console"})
    assert (settings.log.level, settings.log.format) == ("debug", "console")
    assert load_settings(None, {}).log.format is None


def test_require_names_every_missing_setting() -> None:
    """Settings.require reports all the required settings left unset in one message."""
    settings = load_settings(None, {})
    with pytest.raises(ConfigError) as caught:
        settings.require("hostwinds.api_key", "database.url", "admin.token")
    message = str(caught.value)
    for variable in ("COST_SYNC_HOSTWINDS_API_KEY", "COST_SYNC_DATABASE_URL", "COST_SYNC_ADMIN_TOKEN"):
        assert variable in message


@pytest.mark.parametrize("secret", ["Pq@zx", "Pq/zx@w", "Pq#zx", "Pq@z#x", "Pq#z@x", "P@q#z@x"])
def test_unencoded_password_gets_the_percent_encoding_hint(secret: str) -> None:
    """A raw @, / or # in the password, alone or together, gets the percent-encoding hint, never echoed."""
    url = f"postgresql://app:{secret}@db.internal:5432/penguinmails"
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"COST_SYNC_DATABASE_URL": url})
    message = str(caught.value)
    assert "percent-encode" in message
    assert "Pq" not in message
    assert "zx" not in message


def test_percent_encoded_password_is_accepted() -> None:
    """The same password percent-encoded is a valid URL."""
    settings = load_settings(
        None, {"COST_SYNC_DATABASE_URL": "postgresql://app:p%40ss@db.internal/penguinmails"}
    )
    assert settings.database_dsn().endswith("@db.internal/penguinmails")
