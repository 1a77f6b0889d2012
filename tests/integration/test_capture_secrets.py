"""``doctor --capture`` against the sandbox with secrets planted the way they were found (issue 18,
defect 11), and the capture directory risks: a non-empty directory, a symbolic link."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from cost_sync.cli.doctor import run_doctor
from cost_sync.hostwinds.capture import MANIFEST, load_capture
from cost_sync.hostwinds.sandbox import Fleet, SandboxServer, load_demo_fleet
from tests.integration.conftest import seed
from tests.integration.test_first_contact import check, demo_rows, environ

pytestmark = pytest.mark.db

KEY = "hwKey+/0a1b2c=3d&e-Secret9"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA-planted\n-----END OPENSSH PRIVATE KEY-----"
)


def planted(n: int) -> dict[str, Any]:
    """The 18 secrets planted in one instance, each value unique to find it in the capture."""
    return {
        "password": f"pw-{n}-01",
        "rootpass": f"rootpass-{n}-02",
        "configkey": f"cfg-{n}-03",
        "api_token": f"apitok-{n}-04",
        "access_token": f"acctok-{n}-05",
        "root_pw": f"rootpw-{n}-06",
        "vncpass": f"vnc-{n}-07",
        "passphrase": f"phrase-{n}-08",
        "credentials": {"pw": f"credpw-{n}-09", "user": "admin"},
        "auth_header": "Basic " + base64.b64encode(f"admin:basic-{n}-10".encode()).decode(),
        "ssh_keys": [PRIVATE_KEY.replace("planted", f"sshkey{n}11")],
        "callback_url": f"https://hooks.example/cb?token=urltok-{n}-12&x=1",
        "note": quote(KEY, safe="").upper(),
        "user_data": f"#cloud-config\nchpasswd:\n  list: |\n    root:cloudpw-{n}-14\n",
        "secret": f"secret-{n}-15",
        "private_key": f"privkey-{n}-16",
        "api_key": f"apikey-{n}-17",
        "vnc_password": f"vncpw-{n}-18",
    }


def _leaves(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [leaf for value in node.values() for leaf in _leaves(value)]
    if isinstance(node, list):
        return [leaf for value in node for leaf in _leaves(value)]
    return [node]


#: Each planted value as it was planted, the Basic credential decoded, and the key itself.
SECRETS = [leaf for leaf in _leaves(planted(0)) if leaf != "admin"] + ["basic-0-10", "sshkey011", KEY]


def poisoned_fleet(**product: str) -> Fleet:
    fleet = load_demo_fleet()
    instances = [dict(i) for i in fleet.instances]
    instances[0].update(planted(0))
    instances[0].update(product)
    return dataclasses.replace(fleet, api_key=KEY, instances=instances)


async def _doctor(db_url: str, fleet: Fleet, capture_dir: Path) -> Any:
    conn = await asyncpg.connect(db_url)
    await seed(conn, demo_rows(fleet))
    await conn.close()
    async with SandboxServer(fleet) as sandbox:
        return await run_doctor(environ=environ(sandbox.url, db_url, KEY), capture_dir=capture_dir)


async def test_capture_keeps_read_fields_and_none_of_18_planted_secrets(db_url: str, tmp_path: Path) -> None:
    """The 18 secrets of the first instance reach no file; what cost-sync reads is kept, the
    capture still replays; doctor says pass capture."""
    capture_dir = tmp_path / "capture"
    report = await _doctor(db_url, poisoned_fleet(), capture_dir)
    assert check(report, "capture").status == "pass", report.lines()
    texts = {path.name: path.read_text() for path in capture_dir.iterdir()}
    for name, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, (secret, name)
    instances = json.loads(texts["get_instances.json"])["success"]
    first = instances[0] if isinstance(instances, list) else next(iter(instances.values()))
    assert {"serviceid", "product_id", "billingcycle", "product_name"} <= first.keys()
    assert "credentials" not in first or first["credentials"] == {}
    assert load_capture(capture_dir).bodies


@pytest.mark.parametrize(
    "product_name",
    [
        "VPS Basic " + base64.b64encode(b"admin:hunter2").decode(),
        "VPS password: hunter2",
        "VPS " + PRIVATE_KEY,
        "VPS https://admin:hunter2@panel.example/",
    ],
    ids=["basic_auth", "password_field", "private_key", "url_credentials"],
)
async def test_a_secret_in_a_kept_field_refuses_the_capture(
    db_url: str, tmp_path: Path, product_name: str
) -> None:
    """A secret-shaped value in a field cost-sync reads (product_name): doctor fails capture,
    naming the file and the kind of secret, never its value; nothing is written."""
    capture_dir = tmp_path / "capture"
    report = await _doctor(db_url, poisoned_fleet(product_name=product_name), capture_dir)
    capture = check(report, "capture")
    assert capture.status == "fail"
    assert "get_instances.json: the answer still holds a secret" in capture.evidence
    assert "hunter2" not in "\n".join(report.lines())
    assert not capture_dir.exists()


async def test_capture_refuses_a_non_empty_directory_and_a_symlink(db_url: str, tmp_path: Path) -> None:
    """Decided: a capture goes into a new or empty directory that is not a symbolic link; neither
    an earlier capture's manifest nor a link's target is overwritten."""
    fleet = dataclasses.replace(load_demo_fleet(), api_key=KEY)
    used = tmp_path / "used"
    used.mkdir()
    (used / MANIFEST).write_text("earlier capture\n")
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    empty_link_target = tmp_path / "empty-target"
    empty_link_target.mkdir()
    empty_link = tmp_path / "empty-link"
    empty_link.symlink_to(empty_link_target)

    report = await _doctor(db_url, fleet, used)
    assert check(report, "capture").status == "fail"
    assert "is not empty" in check(report, "capture").evidence
    assert (used / MANIFEST).read_text() == "earlier capture\n"
    assert [p.name for p in used.iterdir()] == [MANIFEST]

    (target / MANIFEST).write_text("the link's target\n")
    for directory in (link, empty_link):
        conn = await asyncpg.connect(db_url)
        await conn.execute("DELETE FROM vps_instances")
        await conn.close()
        report = await _doctor(db_url, fleet, directory)
        assert check(report, "capture").status == "fail"
        assert "symbolic link" in check(report, "capture").evidence
    assert (target / MANIFEST).read_text() == "the link's target\n"
    assert list(empty_link_target.iterdir()) == []
