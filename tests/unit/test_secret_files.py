"""Secrets as files: ``*_FILE`` variables and ``*_file`` TOML keys, validated as values are, never echoed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cost_sync.cli import main as cli
from cost_sync.errors import ConfigError
from cost_sync.settings import SECRET_SETTINGS, env_name, load_settings

#: (setting, value variable, file variable, TOML file key, a valid value, its attribute path)
SECRETS = [
    (
        "hostwinds.api_key",
        "COST_SYNC_HOSTWINDS_API_KEY",
        "COST_SYNC_HOSTWINDS_API_KEY_FILE",
        "api_key_file",
        "hw-key-3c0ffee",
    ),
    (
        "database.url",
        "COST_SYNC_DATABASE_URL",
        "COST_SYNC_DATABASE_URL_FILE",
        "url_file",
        "postgresql://app:s3cret-pw@db:5432/penguinmails",
    ),
    ("admin.token", "COST_SYNC_ADMIN_TOKEN", "COST_SYNC_ADMIN_TOKEN_FILE", "token_file", "adm-t0ken-9f1"),
]


def secret_of(settings: object, path: str) -> str | None:
    section, _, key = path.partition(".")
    value = getattr(getattr(settings, section), key)
    return None if value is None else value.get_secret_value()


def test_every_secret_setting_has_a_file_form() -> None:
    """The three secret settings, and only they, are the ones with a *_FILE variable."""
    assert {f"{s}.{k}" for s, k in SECRET_SETTINGS} == {row[0] for row in SECRETS}
    for path, value_env, file_env, _, _ in SECRETS:
        section, _, key = path.partition(".")
        assert env_name(section, key) == value_env
        assert env_name(section, key + "_file") == file_env


@pytest.mark.parametrize(("path", "value_env", "file_env", "toml_key", "value"), SECRETS)
def test_env_file_gives_the_value_without_its_trailing_newline(
    tmp_path: Path, path: str, value_env: str, file_env: str, toml_key: str, value: str
) -> None:
    """`echo VALUE > file`: the value is the file's text without the newline, as if set directly."""
    secret = tmp_path / "secret"
    secret.write_text(value + "\n")
    from_file = load_settings(None, {file_env: str(secret)})
    assert secret_of(from_file, path) == value
    assert from_file == load_settings(None, {value_env: value})
    secret.write_bytes(value.encode() + b"\r\n")
    assert secret_of(load_settings(None, {file_env: str(secret)}), path) == value


@pytest.mark.parametrize(("path", "value_env", "file_env", "toml_key", "value"), SECRETS)
def test_toml_file_key_relative_to_the_config_file(
    tmp_path: Path, path: str, value_env: str, file_env: str, toml_key: str, value: str
) -> None:
    """`url_file = "secrets/x"` in [database] reads the file next to the config, whatever the cwd."""
    section = path.partition(".")[0]
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "x").write_text(value + "\n")
    config = tmp_path / "cost-sync.toml"
    config.write_text(f'[{section}]\n{toml_key} = "secrets/x"\n')
    assert secret_of(load_settings(config, {}), path) == value


@pytest.mark.parametrize(("path", "value_env", "file_env", "toml_key", "value"), SECRETS)
def test_value_and_file_both_in_the_environment_is_an_error_naming_both(
    tmp_path: Path, path: str, value_env: str, file_env: str, toml_key: str, value: str
) -> None:
    """Both forms in the environment: one ConfigError (exit 2) that names both variables."""
    secret = tmp_path / "secret"
    secret.write_text(value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {value_env: value, file_env: str(secret)})
    assert caught.value.exit_code == 2
    assert value_env in caught.value.message
    assert file_env in caught.value.message
    assert value not in caught.value.message


@pytest.mark.parametrize(("path", "value_env", "file_env", "toml_key", "value"), SECRETS)
def test_value_and_file_both_in_the_toml_is_an_error_naming_both(
    tmp_path: Path, path: str, value_env: str, file_env: str, toml_key: str, value: str
) -> None:
    """Both forms in one TOML section: the error names both keys and the file, not the value."""
    section, _, key = path.partition(".")
    (tmp_path / "x").write_text(value)
    config = tmp_path / "cost-sync.toml"
    config.write_text(f'[{section}]\n{key} = "{value}"\n{toml_key} = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    message = caught.value.message
    assert f"{section}.{key}" in message
    assert f"{section}.{toml_key}" in message
    assert str(config) in message
    assert value not in message


def test_environment_wins_over_the_toml_in_either_form(tmp_path: Path) -> None:
    """A *_FILE variable replaces the TOML's value, and a variable replaces the TOML's *_file."""
    (tmp_path / "toml-key").write_text("from-toml-file")
    (tmp_path / "env-key").write_text("from-env-file\n")
    config = tmp_path / "cost-sync.toml"
    config.write_text('[hostwinds]\napi_key = "from-toml"\n[admin]\ntoken_file = "toml-key"\n')
    env = {
        "COST_SYNC_HOSTWINDS_API_KEY_FILE": str(tmp_path / "env-key"),
        "COST_SYNC_ADMIN_TOKEN": "from-env",
    }
    settings = load_settings(config, env)
    assert secret_of(settings, "hostwinds.api_key") == "from-env-file"
    assert secret_of(settings, "admin.token") == "from-env"


def test_empty_file_variable_is_unset_and_does_not_clash(tmp_path: Path) -> None:
    """COST_SYNC_ADMIN_TOKEN= with a token file (as compose leaves a blank variable) is not 'both'."""
    (tmp_path / "token").write_text("t0k\n")
    env = {"COST_SYNC_ADMIN_TOKEN": "", "COST_SYNC_ADMIN_TOKEN_FILE": str(tmp_path / "token")}
    assert secret_of(load_settings(None, env), "admin.token") == "t0k"
    env = {"COST_SYNC_ADMIN_TOKEN": "direct", "COST_SYNC_ADMIN_TOKEN_FILE": ""}
    assert secret_of(load_settings(None, env), "admin.token") == "direct"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A path that does not exist: the setting, the variable and the path are named."""
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"COST_SYNC_DATABASE_URL_FILE": str(missing)})
    message = caught.value.message
    assert "database.url" in message
    assert "COST_SYNC_DATABASE_URL_FILE" in message
    assert str(missing) in message
    assert "not found" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_file_is_a_clear_error_without_its_content(tmp_path: Path) -> None:
    """A file the process may not read: 'cannot be read (Permission denied)', never its text."""
    secret = tmp_path / "key"
    secret.write_text("hw-key-unreadable")
    secret.chmod(0)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"COST_SYNC_HOSTWINDS_API_KEY_FILE": str(secret)})
    assert "cannot be read" in caught.value.message
    assert "hw-key-unreadable" not in caught.value.message


def test_directory_instead_of_file_is_a_clear_error(tmp_path: Path) -> None:
    """A mounted secret directory given instead of the file in it: named, no traceback."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"COST_SYNC_HOSTWINDS_API_KEY_FILE": str(tmp_path)})
    assert "cannot be read" in caught.value.message
    assert "COST_SYNC_HOSTWINDS_API_KEY_FILE" in caught.value.message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xff\xfe-not-utf8", "not UTF-8"),
        (b"x" * (64 * 1024 + 1), "larger than 64 KiB"),
    ],
)
def test_unusable_file_content_is_refused(tmp_path: Path, content: bytes, words: str) -> None:
    """An empty, binary or huge file is not taken as a secret."""
    secret = tmp_path / "key"
    secret.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"COST_SYNC_HOSTWINDS_API_KEY_FILE": str(secret)})
    assert words in caught.value.message


def test_file_content_gets_the_values_validation_without_echo(tmp_path: Path) -> None:
    """A database URL from a file is validated as the value is; the message names the file variable."""
    secret = tmp_path / "dsn"
    secret.write_text("mysql://app:hunter2-pw@db/penguinmails\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"COST_SYNC_DATABASE_URL_FILE": str(secret)})
    message = caught.value.message
    assert message == ("setting database.url (from COST_SYNC_DATABASE_URL_FILE): must be a postgresql:// URL")
    secret.write_text("postgresql://app:p@ss@db:5432/penguinmails\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"COST_SYNC_DATABASE_URL_FILE": str(secret)})
    assert "percent-encode" in caught.value.message
    assert "p@ss" not in caught.value.message


def test_file_errors_are_reported_with_the_other_problems(tmp_path: Path) -> None:
    """A missing file, a clash and a bad cron all come back in one message."""
    (tmp_path / "t").write_text("t")
    env = {
        "COST_SYNC_HOSTWINDS_API_KEY_FILE": str(tmp_path / "missing"),
        "COST_SYNC_ADMIN_TOKEN": "t",
        "COST_SYNC_ADMIN_TOKEN_FILE": str(tmp_path / "t"),
        "COST_SYNC_SCHEDULE": "every hour",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    message = caught.value.message
    assert message.startswith("3 settings need attention")
    for word in ("hostwinds.api_key", "admin.token", "sync.schedule"):
        assert word in message


def test_toml_file_key_must_be_a_path(tmp_path: Path) -> None:
    """`api_key_file = 3` is refused with the key named, not as an unknown setting."""
    config = tmp_path / "cost-sync.toml"
    config.write_text("[hostwinds]\napi_key_file = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert "hostwinds.api_key_file" in caught.value.message
    assert "must be the path of a file" in caught.value.message


def test_required_setting_names_the_file_variable_too() -> None:
    """A missing secret's message says it may come from a file."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {}).require("database.url")
    assert "COST_SYNC_DATABASE_URL or COST_SYNC_DATABASE_URL_FILE" in caught.value.message


def test_cli_both_forms_exit_2_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cost-sync migrate` with the URL given twice: exit 2, one line naming both variables."""
    for name in list(os.environ):
        if name.startswith("COST_SYNC_"):
            monkeypatch.delenv(name)
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://app:file-pw@127.0.0.1:1/db\n")
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", "postgresql://app:env-pw@127.0.0.1:1/db")
    monkeypatch.setenv("COST_SYNC_DATABASE_URL_FILE", str(secret))
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "COST_SYNC_DATABASE_URL and COST_SYNC_DATABASE_URL_FILE" in err
    assert "file-pw" not in err
    assert "env-pw" not in err
