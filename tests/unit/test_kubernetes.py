"""deploy/kubernetes/: every manifest valid against the Kubernetes schemas, offline, and deployable as is.

kubernetes-validate ships the schemas of each Kubernetes release in its wheel; the validation runs
with every network call refused, so it cannot have fetched one.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cost_sync.settings import SECRET_SETTINGS, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
#: The oldest release the manifests support (CronJob timeZone is GA from 1.27) and the newest known.
VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SECRET_ENV = {env_name(section, key) for section, key in SECRET_SETTINGS}


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every document of every manifest."""
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for data in yaml.safe_load_all(path.read_text()):
            if data is not None:
                found.append((path.name, data))
    return found


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for _, d in documents() if d["kind"] == kind and name in {None, d["metadata"]["name"]}]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


WORKLOADS = [("Deployment", "cost-sync"), ("Job", "cost-sync-migrate"), ("CronJob", "cost-sync-once")]


def test_the_manifests_are_the_expected_resources() -> None:
    """A Deployment, its Service and PodDisruptionBudget, the migrate Job, the CronJob, an example Secret."""
    assert sorted((name, d["kind"]) for name, d in documents()) == [
        ("cronjob.yaml", "CronJob"),
        ("deployment.yaml", "Deployment"),
        ("migrate-job.yaml", "Job"),
        ("pdb.yaml", "PodDisruptionBudget"),
        ("secret.example.yaml", "Secret"),
        ("service.yaml", "Service"),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly_without_network(version: str, no_network: None) -> None:
    """Each resource against the schema of its kind and version, unknown fields refused."""
    for name, data in documents():
        validated = kubernetes_validate.validate(data, version, strict=True)
        assert validated, name


def test_the_validation_refuses_a_wrong_manifest(no_network: None) -> None:
    """The check is real: a misspelt field and a wrong type are refused."""
    deployment = resource("Deployment")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, VERSIONS[-1], strict=True)
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, VERSIONS[-1], strict=True)


def test_deployment_runs_two_replicas_probed_on_healthz_and_readyz() -> None:
    """Two replicas; startup and liveness on /healthz, readiness on /readyz, on the admin port."""
    deployment = resource("Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = pod_spec(deployment)["containers"]
    assert container["args"] == ["run"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item["value"] for item in container["env"]}
    assert ports["admin"] == int(env["COST_SYNC_ADMIN_LISTEN"].rpartition(":")[2])
    assert env["COST_SYNC_ADMIN_LISTEN"].startswith("0.0.0.0:")
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "admin"}, probe
    service = resource("Service")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "admin"
    assert resource("PodDisruptionBudget")["spec"]["selector"] == deployment["spec"]["selector"]


def quantity(value: str | int) -> float:  # float-ok: CPU cores and bytes, compared only
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi)?", str(value))
    assert match, value
    return float(match[1]) * units.get(match[2] or "", 1)  # float-ok


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_every_workload_is_non_root_read_only_and_bounded(kind: str, name: str) -> None:
    """Requests and limits set (requests within limits); non-root as the image's user; read-only root."""
    spec = pod_spec(resource(kind, name))
    dockerfile_uid = re.search(r"useradd [^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert dockerfile_uid
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == int(dockerfile_uid[1])
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        assert container["image"] == f"cost-sync:{VERSION}"
        resources = container["resources"]
        for what in ("cpu", "memory"):
            assert quantity(resources["requests"][what]) <= quantity(resources["limits"][what]), what
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["runAsNonRoot"] is True
        assert security["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_secrets_reach_cost_sync_as_mounted_files(kind: str, name: str, tmp_path: Path) -> None:
    """No secret in an environment value: each *_FILE names a key of the Secret, mounted read-only."""
    spec = pod_spec(resource(kind, name))
    secret_keys = set(resource("Secret")["stringData"])
    (container,) = spec["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert not SECRET_ENV & set(env), "a secret given as a value"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mapped = {}
    for variable, path in env.items():
        if not variable.endswith("_FILE"):
            continue
        directory, _, file_name = path.rpartition("/")
        mount = mounts[directory]
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == resource("Secret")["metadata"]["name"]
        assert file_name in secret_keys
        if "items" in secret:
            assert {"key": file_name, "path": file_name} in secret["items"]
        stand_in = tmp_path / file_name
        stand_in.write_text(
            "postgresql://u:p@db:5432/penguinmails\n" if file_name == "database_url" else f"{file_name}-x\n"
        )
        mapped[variable] = str(stand_in)
    settings = load_settings(None, {**env, **mapped})
    needed = {"Job": ["database.url"]}.get(kind, ["database.url", "hostwinds.api_key"])
    settings.require(*needed)
    if kind == "Deployment":
        assert settings.admin.token is not None


def test_migrate_job_and_once_cronjob() -> None:
    """The Job runs `migrate` (retried); the CronJob runs `--once` and never two at a time."""
    job = resource("Job")
    assert pod_spec(job)["containers"][0]["args"] == ["migrate"]
    assert job["spec"]["backoffLimit"] >= 1
    cron = resource("CronJob")
    assert pod_spec(cron)["containers"][0]["args"] == ["--once"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod_spec(cron)["restartPolicy"] == "Never"
