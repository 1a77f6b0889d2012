"""What `docker compose config` checks, for compose.yaml and its override, without Docker.

- the compose-spec JSON schema (vendored by check-jsonschema: offline, the one `docker compose`
  follows);
- the merge of an override file into the base, with compose's rules where they matter here:
  mappings merge key by key, most sequences append (without duplicates), and ``command``,
  ``entrypoint`` and ``healthcheck.test`` are replaced;
- ``${VAR:-default}`` interpolation (and ``$$`` for a literal ``$``), with a malformed ``$``
  refused as compose refuses it;
- profiles: a service whose profiles are all inactive is left out, and a ``depends_on`` on a service
  left out is an error unless it says ``required: false``;
- every ``depends_on`` names a defined service, every secret a service uses is defined.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Sequences compose replaces instead of appending to.
REPLACED = {("command",), ("entrypoint",), ("healthcheck", "test")}
_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class ComposeError(Exception):
    """The file (or the merged project) would be refused."""


def load(name: str) -> dict[str, Any]:
    """A compose file of the repository, parsed."""
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def schema() -> dict[str, Any]:
    """The compose-spec JSON schema that check-jsonschema ships."""
    text = (
        importlib.resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    ).read_text()
    data = json.loads(text)
    assert isinstance(data, dict)
    return data


def validate_schema(data: dict[str, Any]) -> None:
    """Raise ComposeError with every schema violation."""
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        raise ComposeError("; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors))


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """``override`` merged into ``base`` as compose merges ``-f base -f override``."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value, (*path, key)) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if path[-2:] in REPLACED or path[-1:] in REPLACED:
            return override
        return base + [item for item in override if item not in base]
    return override


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Every string with ``${VAR:-default}``, ``${VAR}``, ``$VAR`` and ``$$`` resolved."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value
    out, position = [], 0
    literals = []
    for match in _VARIABLE.finditer(value):
        literals.append(value[position : match.start()])
        out.append(literals[-1])
        position = match.end()
        if match[0] == "$$":
            out.append("$")
            continue
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        current = environ.get(name)
        if op in {":-", "-"}:
            use_default = current is None or (op == ":-" and current == "")
            out.append(arg if use_default else str(current))
        elif op in {":?", "?"}:
            if current is None or (op == ":?" and current == ""):
                raise ComposeError(f"required variable {name} is missing: {arg}")
            out.append(current)
        elif op is None:
            out.append(current or "")
        else:
            raise ComposeError(f"unsupported interpolation {match[0]!r}")
    literals.append(value[position:])
    if any("$" in literal for literal in literals):
        raise ComposeError(f"invalid interpolation format in {value!r} (a literal $ is written $$)")
    return "".join(out) + literals[-1]


def project(
    *names: str, profiles: frozenset[str] = frozenset(), environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """The merged, interpolated, profile-filtered project of ``names``; ComposeError if refused."""
    return project_of([(name, load(name)) for name in names], profiles=profiles, environ=environ)


def project_of(
    named: list[tuple[str, dict[str, Any]]],
    *,
    profiles: frozenset[str] = frozenset(),
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """As :func:`project`, for files already parsed (a test's variant of one)."""
    names = [name for name, _ in named]
    files = [data for _, data in named]
    for name, data in zip(names, files, strict=True):
        try:
            validate_schema(data)
        except ComposeError as exc:
            raise ComposeError(f"{name}: {exc}") from None
    merged: dict[str, Any] = {}
    for data in files:
        merged = merge(merged, data)
    merged = interpolate(merged, environ or {})
    validate_schema(merged)
    services: dict[str, Any] = merged["services"]
    enabled = {
        name: service
        for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & profiles
    }
    secrets = merged.get("secrets", {})
    for name, service in enabled.items():
        depends = service.get("depends_on", {})
        for target, how in depends.items() if isinstance(depends, dict) else ((t, {}) for t in depends):
            if target not in services:
                raise ComposeError(f"service {name!r} depends on undefined service {target!r}")
            if target not in enabled and how.get("required", True):
                raise ComposeError(f"service {name!r} depends on {target!r}, which its profiles leave out")
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            if source not in secrets:
                raise ComposeError(f"service {name!r} refers to undefined secret {source!r}")
    return {**merged, "services": enabled}
