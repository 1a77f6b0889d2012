"""The command line: help, version, usage errors."""

from __future__ import annotations

import pytest

from cost_sync import __version__, cli


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`cost-sync --version` prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"cost-sync {__version__}"


def test_help_lists_every_verb_and_the_one_shot_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`cost-sync --help` names each verb and the --once options."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for word in (
        "migrate",
        "run",
        "resync",
        "demo",
        "sandbox",
        "doctor",
        "--once",
        "--dry-run",
        "--instance",
        "--json",
    ):
        assert word in out


@pytest.mark.parametrize(
    "argv",
    [["--dry-run"], ["--instance", "1"], ["resync"], ["migrate", "--check", "--rollback", "0001"], ["bogus"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Options without the flag they belong to, a missing target or an unknown verb: usage, exit 2."""
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_missing_api_key_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cost-sync --once` without an API key names the setting and exits 2 before any I/O."""
    monkeypatch.delenv("COST_SYNC_HOSTWINDS_API_KEY", raising=False)
    monkeypatch.delenv("COST_SYNC_CONFIG", raising=False)
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", "postgresql://x@127.0.0.1:1/db")
    assert cli.main(["--once"]) == 2
    assert "hostwinds.api_key" in capsys.readouterr().err


def test_doctor_reports_a_bad_setting_as_its_first_failed_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cost-sync doctor` with an invalid plan_key fails the settings check, names it, and exits 1."""
    monkeypatch.delenv("COST_SYNC_CONFIG", raising=False)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_PLAN_KEY", "uuid")
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "fail  settings" in out
    assert "hostwinds.plan_key" in out


def test_sandbox_api_key_goes_with_replay(capsys: pytest.CaptureFixture[str]) -> None:
    """`cost-sync sandbox --api-key K` without --replay is a usage error (exit 2)."""
    assert cli.main(["sandbox", "--api-key", "k", "--port", "0"]) == 2
    assert "--api-key goes with --replay" in capsys.readouterr().err
