"""Typed settings: ``COST_SYNC_*`` environment variables over an optional TOML file over defaults.

A setting is named by its TOML path (``hostwinds.url``). Its environment variable is
``COST_SYNC_<SECTION>_<KEY>`` (``COST_SYNC_HOSTWINDS_URL``, ``COST_SYNC_DATABASE_URL``,
``COST_SYNC_ADMIN_TOKEN``), except the ``[sync]`` section whose keys need no section
(``COST_SYNC_SCHEDULE``, ``COST_SYNC_STATUSES``). Every problem (an unknown variable, an invalid
value, a required setting left unset) is reported in one :class:`~cost_sync.errors.ConfigError`
that names each setting, before any I/O, and secrets (the API key, the database URL's password,
the admin token) never appear in a repr or an error.

Each secret setting (:data:`SECRET_SETTINGS`) can instead be read from a file, the Docker and
Kubernetes convention for mounted secrets: ``COST_SYNC_HOSTWINDS_API_KEY_FILE``,
``COST_SYNC_ADMIN_TOKEN_FILE``, ``COST_SYNC_DATABASE_URL_FILE``, or ``api_key_file``, ``token_file``,
``url_file`` in the TOML (a relative path there is relative to the config file). The file's text,
trailing newlines removed, is then validated as the value would be. Giving a setting both as a value
and as a file in the same place is an error naming both; the environment still wins over the TOML.
The only I/O here is reading those files (and the TOML).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from cost_sync.domain.models import Cycle, override_key
from cost_sync.domain.pricing import normalise_cycle, spelling_key
from cost_sync.errors import ConfigError

ENV_PREFIX = "COST_SYNC_"
#: Settings that hold a secret: each can also be given as a file (``<KEY>_FILE`` / ``<key>_file``).
SECRET_SETTINGS = (("hostwinds", "api_key"), ("database", "url"), ("admin", "token"))
FILE_SUFFIX = "_file"
#: A secret file larger than this is not a secret (a wrong path such as a log or /dev/zero).
MAX_SECRET_FILE_BYTES = 64 * 1024
CONFIG_ENV = "COST_SYNC_CONFIG"
#: Variables with the prefix that are not settings (so they are not reported as unknown).
NON_SETTING_ENV = frozenset({CONFIG_ENV})
NON_SETTING_ENV_PREFIXES = ("COST_SYNC_TEST_", "COST_SYNC_BENCH_")

DEFAULT_HOSTWINDS_URL = "https://clients.hostwinds.com/cloud/api.php"
KNOWN_STATUSES = ("active", "provisioning", "scheduled_decommission", "decommissioned")
MAX_AMOUNT = Decimal("999999.99")


URL_ENCODING_HINT = (
    "the host looks like part of the password: percent-encode special characters in the "
    "password (@ as %40, : as %3A, / as %2F, # as %23, ? as %3F)"
)


def password_in_host(url: str) -> bool:
    """True when an unencoded character in the URL's password makes its host look like a password."""
    rest = url.partition("://")[2]
    head = rest.split("/", 1)[0].split("?", 1)[0]
    authority = head.split("#", 1)[0]
    # Two @ in the authority, or an @ that only appears after a / ? or # cut the authority short.
    if authority.count("@") > 1 or ("@" not in authority and "@" in rest.split("?", 1)[0]):
        return True
    # An @ and a # both in the password: the # cuts the URL after the first @, leaving a host
    # that is really the rest of the password; the true host follows an @ after the #.
    return "@" in head.partition("#")[2]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - a port out of range raises here, not later as a traceback
    except ValueError:
        raise ValueError("the port must be a number from 0 to 65535") from None
    return value


#: Hosts an http:// Hostwinds URL may name: the key then never leaves this machine.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _cleartext_off_host(url: str) -> bool:
    # The API key travels in the form body: over http:// it would cross the network in cleartext.
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "").lower() not in LOOPBACK_HOSTS


def _cron(value: str) -> str:
    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"not a valid 5-field cron expression ({exc})") from None
    return value


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError('must be an amount in USD such as "12.50"')
    try:
        amount = Decimal(str(value).strip())
    except ArithmeticError:
        raise ValueError('must be an amount in USD such as "12.50"') from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a non-negative amount")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and amount != amount.quantize(Decimal("0.01")):
        raise ValueError("must have at most 2 decimals")
    if amount > MAX_AMOUNT:
        raise ValueError(f"must be at most {MAX_AMOUNT}")
    return amount.quantize(Decimal("0.01"))


def _override_amount(value: Any) -> Decimal:
    amount = _amount(value)
    if amount == 0:
        # Unknown is never zero: an override of 0.00 would store "free" for a VPS that costs money.
        raise ValueError("must be more than 0.00 (remove the override to let Hostwinds price the row)")
    return amount


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464 (port 0: any free port)")
    return value


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _json_table(value: Any) -> Any:
    # COST_SYNC_HOSTWINDS_CYCLE_ALIASES='{"Bi-Annually": "semiannually"}': a table from the environment.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError('must be a JSON object such as {"Bi-Annually": "semiannually"}') from None
    return value


def _cycle_aliases(value: Any) -> dict[str, Cycle]:
    """Spelling (normalised as cycles are) -> cycle; an alias may not re-point a known spelling."""
    if not isinstance(value, dict):
        raise ValueError('must be a table such as [hostwinds.cycle_aliases] "Bi-Annually" = "semiannually"')
    aliases: dict[str, Cycle] = {}
    for spelling, target in value.items():
        cycle = normalise_cycle(target) if isinstance(target, str) else None
        if cycle is None:
            known = ", ".join(c.value for c in Cycle)
            raise ValueError(f"{spelling!r}: {target!r} is not a billing cycle (known: {known})")
        already = normalise_cycle(spelling)
        if already is not None and already is not cycle:
            raise ValueError(f"{spelling!r} already names the {already.value} cycle; it cannot be aliased")
        key = spelling_key(spelling)
        if not key:
            raise ValueError("an alias needs a non-empty spelling")
        if aliases.get(key, cycle) is not cycle:
            raise ValueError(f"{spelling!r} is aliased twice, to different cycles")
        aliases[key] = cycle
    return aliases


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _lower_or_unset(value: Any) -> Any:
    return _lower(_blank_is_unset(value))


def _blank_is_unset(value: Any) -> Any:
    # COST_SYNC_ADMIN_TOKEN= (empty, as compose files leave it) means "not set", never "empty secret".
    if isinstance(value, str) and not value.strip():
        return None
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Secret = Annotated[SecretStr | None, BeforeValidator(_blank_is_unset)]
OptHttpUrl = Annotated[HttpUrl | None, BeforeValidator(_blank_is_unset)]
Amount = Annotated[Decimal, BeforeValidator(_amount)]
OverrideAmount = Annotated[Decimal, BeforeValidator(_override_amount)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostwindsSettings(_Section):
    """``[hostwinds]``: where and how politely to ask Hostwinds."""

    url: HttpUrl = DEFAULT_HOSTWINDS_URL
    #: Accept an http:// URL to a host other than loopback (a sandbox in another container).
    allow_http: bool = False
    api_key: Secret = None
    managed: bool = False
    #: 0 turns the limit off; otherwise at least one request per 100 s, or a run never ends.
    requests_per_second: float = Field(default=2.0, ge=0, le=1000, allow_inf_nan=False)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    #: The deadline of one HTTP attempt, the whole body included.
    timeout_seconds: float = Field(default=30.0, gt=0, le=600, allow_inf_nan=False)
    attempts: int = Field(default=4, ge=1, le=10)
    #: The largest answer read; a longer body fails the attempt instead of filling memory.
    max_response_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, le=4 * 1024 * 1024 * 1024)
    currency: str = "USD"
    #: The price-list field an instance's ``product_id`` is joined to (unverified: see ``doctor``).
    plan_key: Annotated[Literal["id", "rid"], BeforeValidator(_lower)] = "id"
    #: An account's billing-cycle spelling -> the cycle it means, e.g. "Bi-Annually" = "semiannually".
    #: Stored by spelling key (see :func:`cost_sync.domain.pricing.spelling_key`).
    cycle_aliases: Annotated[
        dict[str, Cycle], BeforeValidator(_cycle_aliases), BeforeValidator(_json_table)
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _https_unless_allowed(self) -> HostwindsSettings:
        if _cleartext_off_host(self.url) and not self.allow_http:
            raise ValueError(
                "hostwinds.url must be an https:// URL: over http:// the API key would travel in "
                "cleartext (http:// is accepted for 127.0.0.1, ::1 and localhost, or with "
                "hostwinds.allow_http = true, e.g. for a sandbox in another container)"
            )
        return self

    @field_validator("requests_per_second")
    @classmethod
    def _off_or_sensible(cls, value: float) -> float:
        if 0 < value < 0.01:
            raise ValueError("must be 0 (no limit) or at least 0.01 (one request per 100 s)")
        return value

    @field_validator("currency")
    @classmethod
    def _usd_only(cls, value: str) -> str:
        if value != "USD":
            raise ValueError("only USD is supported: approximate_cost is documented as USD")
        return value


class DatabaseSettings(_Section):
    """``[database]``: the PostgreSQL that holds ``vps_instances``."""

    url: Secret = None
    #: How long a run waits for the run lock, and its write for a row lock held elsewhere.
    lock_timeout_seconds: float = Field(default=30.0, ge=0, le=86400, allow_inf_nan=False)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=600, allow_inf_nan=False)
    #: asyncpg's prepared-statement cache per connection. 0 (off) works through a pooler in
    #: transaction mode (PgBouncer, NileDB), where a named statement would outlive its transaction.
    statement_cache_size: int = Field(default=0, ge=0, le=10_000)
    #: How long the run lease lasts without a heartbeat: another process takes over a killed run's
    #: lease this long after its last renewal (renewed every third of it while a run runs).
    lease_seconds: float = Field(default=30.0, ge=1, le=3600, allow_inf_nan=False)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = value.get_secret_value()
            if urlsplit(url).scheme not in {"postgres", "postgresql"}:
                raise ValueError("must be a postgresql:// URL")
            if password_in_host(url):
                raise ValueError(URL_ENCODING_HINT)
            try:
                urlsplit(url).port  # noqa: B018 - parsed for its ValueError only
            except ValueError:
                raise ValueError(
                    "the port must be a number from 0 to 65535 (or the password needs percent-encoding)"
                ) from None
        return value


class SyncSettings(_Section):
    """``[sync]``: when to run and which rows are in scope."""

    schedule: Annotated[str, AfterValidator(_cron)] = "17 * * * *"
    statuses: Annotated[list[str], BeforeValidator(_comma_list)] = Field(
        default_factory=lambda: ["active", "provisioning", "scheduled_decommission"]
    )
    jitter_seconds: int = Field(default=0, ge=0)
    misfire_grace_seconds: int = Field(default=300, ge=1)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=86400, allow_inf_nan=False)
    #: A cached per-service price older than this is asked again (refreshes spread over this window).
    max_price_age_seconds: float = Field(default=86400.0, gt=0, le=366 * 86400, allow_inf_nan=False)
    #: When a run has spent this long, it stops asking Hostwinds, prices what it has and commits.
    max_run_seconds: float = Field(default=300.0, gt=0, le=86400, allow_inf_nan=False)

    @field_validator("statuses")
    @classmethod
    def _known_statuses(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in KNOWN_STATUSES]
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r} (known: {', '.join(KNOWN_STATUSES)})")
        if not value:
            raise ValueError("must name at least one status")
        return value


class AdminSettings(_Section):
    """``[admin]``: the daemon's HTTP endpoint and how to reach it."""

    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9464"
    token: Secret = None
    url: OptHttpUrl = None
    #: Open connections at most; past it a new one displaces the oldest still waiting for its request.
    max_connections: int = Field(default=64, ge=1, le=10000)
    #: A connection must send a whole request (headers and body) within this long, or is closed.
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=600, allow_inf_nan=False)


class GuardSettings(_Section):
    """``[guard]``: when a run holds a change for a person, or applies nothing at all."""

    #: A change larger than this share of a positive previous value is held, not applied.
    max_change_ratio: Decimal = Field(default=Decimal("0.5"), ge=0)
    #: More than this share of rows lost (or of plans gone from the price list): apply nothing.
    max_unmatched_ratio: Decimal = Field(default=Decimal("0.2"), ge=0, le=1)
    #: More than this share of the matched rows in scope unpriced: the run warns
    #: ``mostly_unpriced`` and ``--once`` exits 1 (what it priced is still written).
    max_unpriced_ratio: Decimal = Field(default=Decimal("0.5"), ge=0, le=1)
    #: A change is also compared with the last approved value or the value the row held this many
    #: days ago, so that steps each under max_change_ratio cannot add up unreviewed (0: off).
    drift_window_days: int = Field(default=30, ge=0, le=3650)


class LogSettings(_Section):
    """``[log]``: what the log on stderr shows and how."""

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    #: json or console; unset: console on a terminal, JSON lines otherwise.
    format: Annotated[Literal["json", "console"] | None, BeforeValidator(_lower_or_unset)] = None


def _status_names(value: list[str]) -> list[str]:
    if any(not item.strip() for item in value):
        raise ValueError("a status name cannot be empty")
    return value


StatusNames = Annotated[list[str], BeforeValidator(_comma_list), AfterValidator(_status_names)]


class AttributionSettings(_Section):
    """``[attribution]``: how a VPS's cost is shared among tenants, and whether syncs record it."""

    enabled: bool = False
    assignment_statuses: StatusNames = Field(default_factory=lambda: ["active", "warming"], min_length=1)
    idle_ip_statuses: StatusNames = Field(default_factory=lambda: ["idle"])
    #: Days of per-tenant history (cost_sync_tenant_daily) kept for `report --html`.
    keep_days: int = Field(default=400, ge=1, le=36600)


class Settings(BaseModel):
    """All of cost-sync's settings, validated (defaults included).

    A plain pydantic model: :func:`load_settings` is the one source, reading the TOML and the
    environment itself, because what it must say (which variable or file a bad value came from,
    variables with the prefix that are no setting, ``<KEY>_FILE`` beside ``<KEY>``, ``[sync]`` keys
    without a section stem) is not what pydantic-settings' sources report.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    hostwinds: HostwindsSettings = Field(default_factory=HostwindsSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    #: Finance overrides: ``hostwinds_instance_id`` (trimmed, lower case) -> monthly USD.
    overrides: dict[str, OverrideAmount] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _normalised_ids(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        # Ids are matched trimmed and case-insensitively, as --instance and UUIDs are.
        normalised: dict[str, Decimal] = {}
        for key in value:
            id_ = override_key(key)
            if not id_:
                raise ValueError("an override needs a hostwinds_instance_id, not an empty key")
            if id_ in normalised:
                raise ValueError(f"two overrides name the same instance {id_!r} (ids are trimmed, any case)")
            normalised[id_] = value[key]
        return normalised

    def database_dsn(self) -> str:
        """The database URL, which every command that touches PostgreSQL requires."""
        self.require("database.url")
        assert self.database.url is not None
        return self.database.url.get_secret_value()

    def require(self, *paths: str) -> None:
        """Raise one ConfigError naming every setting in ``paths`` (e.g. ``database.url``) left unset."""
        missing = []
        for path in paths:
            section, _, key = path.partition(".")
            if getattr(getattr(self, section), key) is None:
                how = env_name(section, key)
                if (section, key) in SECRET_SETTINGS:
                    how += f" or {env_name(section, key + FILE_SUFFIX)}"
                missing.append(f"setting {path}: required (set {how})")
        if missing:
            raise ConfigError(_together(missing))


#: Section -> its environment-variable stem (``[sync]`` keys stand alone).
_SECTION_ENV = {
    "hostwinds": "HOSTWINDS_",
    "database": "DATABASE_",
    "admin": "ADMIN_",
    "guard": "GUARD_",
    "log": "LOG_",
    "attribution": "ATTRIBUTION_",
    "sync": "",
}
_SECTIONS: dict[str, type[_Section]] = {
    "hostwinds": HostwindsSettings,
    "database": DatabaseSettings,
    "sync": SyncSettings,
    "admin": AdminSettings,
    "guard": GuardSettings,
    "log": LogSettings,
    "attribution": AttributionSettings,
}


def env_name(section: str, key: str) -> str:
    """The environment variable of one setting, e.g. ``COST_SYNC_DATABASE_URL``."""
    return f"{ENV_PREFIX}{_SECTION_ENV[section]}{key.upper()}"


def _together(problems: list[str]) -> str:
    """Several problems as one message, so that a user fixes them all in one go."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} settings need attention: " + "; ".join(problems)


def env_names() -> dict[str, tuple[str, str]]:
    """Every settings environment variable -> (section, key)."""
    names = {
        env_name(section, key): (section, key)
        for section in _SECTION_ENV
        for key in _SECTIONS[section].model_fields
    }
    for section, key in SECRET_SETTINGS:
        names[env_name(section, key + FILE_SUFFIX)] = (section, key + FILE_SUFFIX)
    return names


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            # parse_float=Decimal: an override written as 12.50 stays exact.
            return tomllib.load(fh, parse_float=Decimal)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None


def _env_values(
    environ: Mapping[str, str], problems: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    names = env_names()
    values: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in NON_SETTING_ENV:
            continue
        if name.startswith(NON_SETTING_ENV_PREFIXES):
            continue
        if name not in names:
            problems.append(f"environment variable {name}: not a cost-sync setting")
            continue
        section, key = names[name]
        values.setdefault(section, {})[key] = raw
        origin[f"{section}.{key}"] = name
    return values, origin


def _describe(error: Mapping[str, Any], origin: Mapping[str, str], source: str) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "not a cost-sync setting"
    where = f" (from {origin[loc]})" if loc in origin else f" (in {source})" if source else ""
    return f"setting {loc}{where}: {message}"


def read_secret_file(path: Path) -> str:
    """The text of a secret file, trailing newlines removed; ValueError (never the content) if unusable."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"file {path} not found") from None
    except OSError as exc:
        raise ValueError(f"file {path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"file {path} is larger than {MAX_SECRET_FILE_BYTES // 1024} KiB: not a secret file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"file {path} is not UTF-8 text") from None
    # `echo KEY > file` and most editors end the file with a newline that is not part of the secret.
    text = text.rstrip("\r\n")
    if not text.strip():
        raise ValueError(f"file {path} is empty")
    return text


def _resolve_secret_files(
    data: dict[str, Any],
    env: dict[str, dict[str, Any]],
    origin: dict[str, str],
    config_path: Path | None,
    problems: list[str],
) -> None:
    """Replace every ``<key>_file`` (TOML or environment) in ``data``/``env`` by the file's text."""
    for section, key in SECRET_SETTINGS:
        file_key = key + FILE_SUFFIX
        env_keys = env.get(section, {})
        toml_keys = data.get(section)
        if file_key in env_keys and not str(env_keys[file_key]).strip():
            # COST_SYNC_..._FILE= (empty, as compose files leave it) means "not set", as for the value.
            del env_keys[file_key]
            origin.pop(f"{section}.{file_key}", None)
        if (file_key in env_keys or key in env_keys) and isinstance(toml_keys, dict):
            # The environment wins over the TOML, whichever form each uses.
            toml_keys.pop(key, None)
            toml_keys.pop(file_key, None)
        if file_key in env_keys:
            name = env_name(section, file_key)
            raw_path = str(env_keys.pop(file_key))
            origin.pop(f"{section}.{file_key}", None)
            if str(env_keys.get(key) or "").strip():
                problems.append(
                    f"setting {section}.{key}: both {env_name(section, key)} and {name} are set; set only one"
                )
                continue
            try:
                env_keys[key] = read_secret_file(Path(raw_path))
            except ValueError as exc:
                problems.append(f"setting {section}.{key} (from {name}): {exc}")
                env_keys.pop(key, None)
                continue
            origin[f"{section}.{key}"] = name
            continue
        if key in env_keys:
            continue
        if not isinstance(toml_keys, dict) or file_key not in toml_keys:
            continue
        where = f" (in {config_path})" if config_path else ""
        source = f"{section}.{file_key}" + (f" in {config_path}" if config_path else "")
        if key in toml_keys:
            problems.append(
                f"setting {section}.{key}{where}: both {section}.{key} and {section}.{file_key} are set; "
                "set only one"
            )
            del toml_keys[file_key]
            continue
        file_value = toml_keys.pop(file_key)
        if not isinstance(file_value, str) or not file_value.strip():
            problems.append(f"setting {section}.{file_key}{where}: must be the path of a file")
            continue
        path = Path(file_value)
        if not path.is_absolute() and config_path is not None:
            path = config_path.parent / path
        try:
            toml_keys[key] = read_secret_file(path)
        except ValueError as exc:
            problems.append(f"setting {section}.{key} (from {source}): {exc}")
            continue
        origin[f"{section}.{key}"] = source


def load_settings(config_path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the TOML file (if any) and the environment; raise ConfigError if bad."""
    environ = os.environ if environ is None else environ
    if config_path is None and environ.get(CONFIG_ENV):
        config_path = Path(environ[CONFIG_ENV])
    data: dict[str, Any] = _read_toml(config_path) if config_path is not None else {}
    problems: list[str] = []
    env, origin = _env_values(environ, problems)
    _resolve_secret_files(data, env, origin, config_path, problems)
    for section, keys in env.items():
        current = data.get(section)
        if current is not None and not isinstance(current, dict):
            problems.append(f"setting {section}: must be a table, e.g. [{section}]")
            continue
        data[section] = {**(current or {}), **keys}
    settings: Settings | None = None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        source = str(config_path) if config_path else ""
        # include_input=False: a rejected value may be a secret.
        problems += [
            _describe(error, origin, source) for error in exc.errors(include_input=False, include_url=False)
        ]
    if problems or settings is None:
        raise ConfigError(_together(problems))
    return settings
