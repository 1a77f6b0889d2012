"""compose.yaml and compose.hostwinds.yaml, checked as `docker compose config` would (tests/compose_model.py).

The demo works with no edit and no key; a real account needs only the override and ./secrets/.
"""

from __future__ import annotations

import copy
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cost_sync.cli.demo import DEMO_ROWS
from cost_sync.hostwinds.sandbox import DEMO_FLEET_PATH
from cost_sync.settings import load_settings
from tests.compose_model import ROOT, ComposeError, load, project, project_of, validate_schema

IMAGE = "cost-sync:local"
BASE = "compose.yaml"
REAL = "compose.hostwinds.yaml"


def demo() -> dict[str, Any]:
    return project(BASE)


def real() -> dict[str, Any]:
    return project(BASE, REAL)


def test_each_file_and_the_merge_follow_the_compose_spec(no_network: None) -> None:
    """Both files, and the demo and real-account projects, pass the compose-spec schema and rules.

    The schema is the one check-jsonschema ships, read with the network refused.
    """
    assert set(demo()["services"]) == {"db", "migrate", "sandbox", "cost-sync"}
    assert set(real()["services"]) == {"migrate", "cost-sync"}
    # With the demo profile asked for, the override still makes a valid project.
    assert set(project(BASE, REAL, profiles=frozenset({"demo"}))["services"]) == set(demo()["services"])


def test_the_schema_check_refuses_what_compose_refuses(no_network: None) -> None:
    """The schema is really applied: an unknown key or a wrong condition is refused."""
    broken = copy.deepcopy(load(BASE))
    broken["services"]["migrate"]["depends_on"]["db"]["condition"] = "service_ready"
    with pytest.raises(ComposeError, match="service_ready"):
        validate_schema(broken)
    broken = copy.deepcopy(load(BASE))
    broken["services"]["db"]["helthcheck"] = {}
    with pytest.raises(ComposeError, match="helthcheck"):
        validate_schema(broken)


def test_a_dependency_left_out_must_not_be_required() -> None:
    """The mistake compose.yaml's old header led to: depending on a service that is not there."""
    override = copy.deepcopy(load(REAL))
    del override["services"]["cost-sync"]["depends_on"]["sandbox"]["required"]
    with pytest.raises(ComposeError, match="'cost-sync' depends on 'sandbox'"):
        project_of([(BASE, load(BASE)), (REAL, override)])
    dropped = copy.deepcopy(load(BASE))
    del dropped["services"]["sandbox"]
    with pytest.raises(ComposeError, match="undefined service 'sandbox'"):
        project_of([(BASE, dropped)])


def test_an_undefined_secret_is_refused() -> None:
    """Every secret a service names is defined at the top level."""
    broken = copy.deepcopy(load(BASE))
    broken["services"]["cost-sync"]["secrets"].append("admin_token")
    with pytest.raises(ComposeError, match="undefined secret 'admin_token'"):
        project_of([(BASE, broken)])


def test_a_bare_dollar_is_refused_as_compose_refuses_it() -> None:
    """`$rc` in a shell script must be written `$$rc`, or compose interpolates (or refuses) it."""
    broken = copy.deepcopy(load(BASE))
    broken["services"]["migrate"]["entrypoint"][2] = 'echo "$(date)"'
    with pytest.raises(ComposeError, match="invalid interpolation"):
        project_of([(BASE, broken)])


@pytest.mark.parametrize("names", [(BASE,), (BASE, REAL)])
def test_the_image_is_built_once_and_used_by_every_cost_sync_service(names: tuple[str, ...]) -> None:
    """One service builds cost-sync:local (with the revision argument); the others use that image."""
    services = project(*names)["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["cost-sync"]
    assert services["cost-sync"]["image"] == IMAGE
    assert services["cost-sync"]["build"]["args"]["GIT_REVISION"] == "unknown"
    ours = {name for name, service in services.items() if service.get("image") == IMAGE}
    assert ours == set(services) - {"db"}


def test_the_database_is_waited_for_over_tcp_with_a_query() -> None:
    """The db healthcheck connects with -h (init scripts done) and queries the seeded table."""
    db = demo()["services"]["db"]
    test = db["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert "-h" in test
    assert test[test.index("-h") + 1] == "127.0.0.1"
    assert any(arg.startswith("SELECT") and "vps_instances" in arg for arg in test)
    assert demo()["services"]["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    daemon = demo()["services"]["cost-sync"]["depends_on"]
    assert daemon["migrate"] == {"condition": "service_completed_successfully"}
    assert daemon["sandbox"] == {"condition": "service_healthy"}


def test_the_demo_seeds_the_demo_fleets_rows() -> None:
    """The db's init scripts create vps_instances, then insert exactly cost-sync demo's rows."""
    mounts = sorted(
        (target, source)
        for source, target, *_ in (v.split(":") for v in demo()["services"]["db"]["volumes"])
        if target.startswith("/docker-entrypoint-initdb.d/")
    )
    assert [Path(source).name for _, source in mounts] == ["vps_instances.sql", "demo_fleet_rows.sql"]
    text = (ROOT / mounts[1][1]).read_text()
    rows = re.findall(r"\('([^']+)', '([^']+)', (NULL|[0-9.]+), 'demo'\)", text)
    assert [(hid, status, None if cost == "NULL" else cost) for hid, status, cost in rows] == DEMO_ROWS


def secret_files(compose: dict[str, Any], tmp_path: Path) -> dict[str, Path]:
    """Secret name -> the host file compose mounts (a made-up one where ./secrets/ has none)."""
    files = {}
    for name, secret in compose["secrets"].items():
        path = ROOT / secret["file"]
        if not path.exists():
            assert secret["file"].startswith("./secrets/"), secret
            path = tmp_path / name
            path.write_text(
                {"database_url": "postgresql://app:pw@db.internal:5432/penguinmails"}.get(
                    name, f"{name}-value"
                )
                + "\n"
            )
        files[name] = path
    return files


def service_environ(compose: dict[str, Any], service: str, tmp_path: Path) -> dict[str, str]:
    """The service's environment with /run/secrets/NAME pointing at the file compose would mount."""
    files = secret_files(compose, tmp_path)
    environ = {}
    used = set(compose["services"][service].get("secrets", []))
    for key, value in compose["services"][service].get("environment", {}).items():
        if isinstance(value, str) and value.startswith("/run/secrets/"):
            name = value.removeprefix("/run/secrets/")
            assert name in used, f"{service} reads secret {name} without mounting it"
            value = str(files[name])
        environ[key] = str(value)
    return environ


@pytest.mark.parametrize("names", [(BASE,), (BASE, REAL)])
def test_cost_sync_accepts_every_services_settings(names: tuple[str, ...], tmp_path: Path) -> None:
    """The environment each service gets loads as settings, with the secrets it needs (no value+file)."""
    compose = project(*names)
    for service in ("migrate", "cost-sync"):
        settings = load_settings(None, service_environ(compose, service, tmp_path))
        settings.require("database.url")
    daemon = load_settings(None, service_environ(compose, "cost-sync", tmp_path))
    daemon.require("hostwinds.api_key", "database.url")
    assert daemon.hostwinds.api_key is not None
    if names == (BASE,):
        fleet = tomllib.loads(DEMO_FLEET_PATH.read_text())
        assert daemon.hostwinds.api_key.get_secret_value() == fleet["api_key"]
        assert daemon.hostwinds.url == "http://sandbox:8080/cloud/api.php"
        assert daemon.admin.token is None
        password = (ROOT / compose["secrets"]["postgres_password"]["file"]).read_text().strip()
        assert daemon.database_dsn() == f"postgresql://postgres:{password}@db:5432/penguinmails"
    else:
        assert daemon.hostwinds.url == "https://clients.hostwinds.com/cloud/api.php"
        assert daemon.hostwinds.allow_http is False
        assert daemon.admin.token is not None
        assert daemon.hostwinds.api_key.get_secret_value() == "hostwinds_api_key-value"


def test_a_real_account_needs_only_secret_files_that_git_ignores() -> None:
    """The override reads every secret from ./secrets/, which is never committed."""
    compose = real()
    for name in ("database_url", "hostwinds_api_key", "admin_token"):
        assert compose["secrets"][name]["file"].startswith("./secrets/")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "secrets/hostwinds_api_key"], cwd=ROOT, check=False
    )
    if (ROOT / ".git").exists():
        assert ignored.returncode == 0, "./secrets/ must be in .gitignore"


# -- the migrate service's retry loop, run by /bin/sh with stand-ins for cost-sync and sleep ----


def run_migrate_loop(tmp_path: Path, exit_codes: list[int]) -> tuple[int, list[str], str]:
    """The migrate entrypoint with a cost-sync that exits with ``exit_codes`` in turn."""
    entrypoint = demo()["services"]["migrate"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    codes = tmp_path / "codes"
    codes.write_text("\n".join(map(str, exit_codes)) + "\n")
    fake = bin_dir / "cost-sync"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f"code=$(head -n 1 {codes}); tail -n +2 {codes} > {codes}.next; mv {codes}.next {codes}\n"
        'exit "${code:-1}"\n'
    )
    sleep = bin_dir / "sleep"
    sleep.write_text(f'#!/bin/sh\necho "sleep $*" >> {calls}\n')
    for script in (fake, sleep):
        script.chmod(0o755)
    done = subprocess.run(
        entrypoint,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, calls.read_text().splitlines(), done.stderr


def test_migrate_is_retried_while_the_database_refuses_it(tmp_path: Path) -> None:
    """Exit 1 twice, then 0: three attempts, a pause before each retry, the service succeeds."""
    code, calls, stderr = run_migrate_loop(tmp_path, [1, 1, 0])
    assert code == 0
    assert calls == ["migrate", "sleep 3", "migrate", "sleep 3", "migrate"]
    assert "retrying" in stderr


def test_a_bad_setting_is_not_retried(tmp_path: Path) -> None:
    """Exit 2 (a setting error) ends the service at once with that code."""
    code, calls, _ = run_migrate_loop(tmp_path, [2])
    assert (code, calls) == (2, ["migrate"])


def test_migrate_gives_up_after_ten_attempts(tmp_path: Path) -> None:
    """A database that never answers: ten attempts, then exit 1 (the daemon does not start)."""
    code, calls, _ = run_migrate_loop(tmp_path, [1] * 20)
    assert code == 1
    assert calls.count("migrate") == 10


def test_no_variable_of_the_shell_is_needed() -> None:
    """No variable is required: `docker compose up` works in an empty environment."""
    assert project(BASE, environ={})["services"]["cost-sync"]["environment"]["COST_SYNC_ADMIN_TOKEN"] == ""
    token = project(BASE, environ={"COST_SYNC_ADMIN_TOKEN": "t"})["services"]["cost-sync"]["environment"]
    assert token["COST_SYNC_ADMIN_TOKEN"] == "t"
