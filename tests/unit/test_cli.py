"""The command line: help, version, usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cost_sync import __version__
from cost_sync.cli import main as cli


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
        "attribution",
        "--once",
        "--dry-run",
        "--instance",
        "--json",
    ):
        assert word in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--dry-run"],
        ["--instance", "1"],
        ["resync"],
        ["migrate", "--check", "--rollback", "0001"],
        ["bogus"],
        ["attribution", "--json", "--csv"],
        ["attribution", "--by", "domain"],
    ],
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


@pytest.mark.parametrize(
    ("verb", "options"),
    [
        ("run", ["--once", "--dry-run", "--instance", "--json", "--no-initial-sync"]),
        ("resync", ["--instance", "--all", "--json", "--wait"]),
        ("migrate", ["--check", "--rollback", "--json"]),
        ("demo", ["--keep", "--json"]),
        ("sandbox", ["--fleet", "--generate", "--replay", "--api-key", "--port", "--json"]),
        ("doctor", ["--json", "--capture"]),
        ("completion", ["bash", "zsh"]),
    ],
)
def test_every_verb_has_its_own_help(
    verb: str, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`cost-sync VERB --help` shows that verb's usage and its own options, exit 0."""
    with pytest.raises(SystemExit) as caught:
        cli.main([verb, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cost-sync {verb}")
    for option in options:
        assert option in out


def test_run_once_without_once_options_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`cost-sync run --dry-run` (no --once) is refused as usage, exit 2."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", "--dry-run"])
    assert caught.value.code == 2
    assert "go with --once" in capsys.readouterr().err


def test_help_imports_no_heavy_library() -> None:
    """Building the parser and its help loads no database, HTTP, scheduling or validation library."""
    probe = (
        "import sys\n"
        "from cost_sync.cli.main import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = ['asyncpg', 'httpx', 'apscheduler', 'starlette', 'uvicorn', 'pydantic', 'structlog',\n"
        "         'prometheus_client', 'shtab', 'importlib.metadata', 'asyncio']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_verbs_register_in_one_list() -> None:
    """Each verb is one registering function in cli.VERBS; the parser offers exactly those verbs."""
    parser = cli.build_parser()
    (verbs,) = [a for a in parser._actions if a.dest == "command"]
    assert list(verbs.choices) == [
        "run",
        "resync",
        "migrate",
        "demo",
        "sandbox",
        "doctor",
        "attribution",
        "explain",
        "held",
        "approve",
        "report",
        "quote",
        "completion",
    ]
    assert len(cli.VERBS) == len(verbs.choices)
