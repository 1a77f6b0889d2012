"""Capture and replay: an account's read-only answers saved as JSON files, served back offline.

``cost-sync doctor --capture DIR`` writes, through :func:`write_capture`, every answer a full sync
needs (the instance list, each price list, every matched instance's cycle prices), plus
``manifest.json`` listing each answer's action, parameters and file. A capture is meant to be
shared, so it keeps (:func:`shareable`) only the fields cost-sync reads and a short allow-list of
harmless ones, with their values; of any other field it keeps numbers, booleans, nulls and the
shape of objects and lists (an answer in an unknown shape can still be reported), never its text.
Every field on :data:`cost_sync.hostwinds.client.DENY_FIELDS` is already gone (the client removes them).
Then what would be written is scanned for the API key in every spelling it travels in and for
secret-shaped values (:func:`cost_sync.domain.redact.secret_shaped`: a private key, Basic auth, a token
in a URL's query, a password in cloud-init text); on any find the capture is refused and nothing
is written. ``DIR`` must be new or empty, and not a symbolic link: a capture never overwrites or
mixes with other files, and each file is created, never opened through a link.

``cost-sync sandbox --replay DIR`` serves those answers with :class:`ReplayServer`: the same
endpoint, form protocol and error envelopes as the sandbox, each request answered with the
captured body for its action and parameters, so ``cost-sync --once`` against the replay computes
what it would against the account, with no network. A request the capture has no answer for gets
an error envelope saying so (a sync then fails, or marks that one service unpriced).
"""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cost_sync.domain.models import INSTANCE_FIELDS, PRICED_CYCLES
from cost_sync.domain.redact import secret_shaped, secret_spellings
from cost_sync.hostwinds.client import READ_ONLY_ACTIONS
from cost_sync.hostwinds.sandbox import API_PATH, WRITE_ACTIONS
from cost_sync.hostwinds.sanitise import DENY_FIELDS
from cost_sync.runtime.httpserve import AppServer, form_fields

__all__ = [
    "FORMAT",
    "MANIFEST",
    "Answer",
    "Capture",
    "CaptureError",
    "ReplayServer",
    "answer_key",
    "load_capture",
    "shareable",
    "write_capture",
]

_log = structlog.get_logger("cost_sync.capture")

#: The manifest's file name inside a capture directory.
MANIFEST = "manifest.json"
#: The manifest format this module writes and reads.
FORMAT = 1
_NOTE = (
    "cost-sync capture: read-only Hostwinds answers with passwords, config keys, the API key and "
    "every field on deny_list removed; `cost-sync sandbox --replay DIR` serves them"
)
_REPLAY_NOTE = "REPLAY: captured Hostwinds answers served offline; this is not Hostwinds"
_JSON = "application/json"
_AUTH_ERROR = [{"result": "error", "action": "Authorization", "message": "Not Authorized!"}]
_SAFE = re.compile(r"[^a-z0-9_-]+")


class CaptureError(ValueError):
    """A capture could not be written or read; the message names the file."""


@dataclass(frozen=True)
class Answer:
    """One captured answer: the action, the parameters it was asked with, the (sanitised) body."""

    action: str
    params: Mapping[str, str]
    body: Any
    #: The HTTP status it came with: an error envelope may come as an object at HTTP 400/401.
    status: int = 200


def answer_key(action: str, params: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """How a request is matched to a captured answer: the action and the parameters that select it,
    with Hostwinds' defaults filled in (``managed`` 1, ``drive_type`` ssd)."""
    if action == "get_price_list":
        managed = (params.get("managed") or "1").strip()
        managed = "0" if managed.lower() in {"0", "false", "no", "off"} else "1"
        drive_type = (params.get("drive_type") or "ssd").strip().lower()
        selected = {"managed": managed, "drive_type": drive_type}
        if params.get("serviceid"):
            selected["serviceid"] = params["serviceid"].strip()
        return action, tuple(sorted(selected.items()))
    if action in {"get_billingcycle_prices", "get_instance", "check_upgrade_order"}:
        return action, (("serviceid", (params.get("serviceid") or "").strip()),)
    return action, ()


def _file_name(action: str, params: Mapping[str, str]) -> str:
    _, selected = answer_key(action, params)
    parts = [action] + [f"{name}-{_SAFE.sub('_', value.lower())}" for name, value in selected]
    return ".".join(parts) + ".json"


_NUMBER_MARK = "\x00capture-number:"
_NUMBER_PLACEHOLDER = re.compile(r'"\\u0000capture-number:([^"\\]*)"')


def dumps(value: Any) -> str:
    """Indented JSON in which a Decimal (a JSON number as parsed) keeps its exact digits."""

    def default(obj: object) -> Any:
        if isinstance(obj, Decimal):
            return f"{_NUMBER_MARK}{obj}"
        raise TypeError(f"cannot serialise {type(obj).__name__}")

    text = json.dumps(value, default=default, indent=2, ensure_ascii=False)
    return _NUMBER_PLACEHOLDER.sub(lambda m: m.group(1), text) + "\n"


#: The fields cost-sync reads from an answer: the envelope, an instance's fields, a price-list
#: row's ids and name, and a price cell's fields (cycle names are recognised as pricing does).
READ_FIELDS = frozenset(
    {"success", "result", "action", "id", "rid", "name", "price", "total", "amount", *INSTANCE_FIELDS}
)
#: Harmless fields kept as sent, to make a capture useful in a bug report.
HARMLESS_FIELDS = frozenset(
    {
        "location",
        "region",
        "os",
        "template",
        "created",
        "regdate",
        "nextduedate",
        "domainstatus",
        "currency",
        "type",
        "managed",
        "drive_type",
        "ram",
        "disk",
        "cpu",
        "vcpu",
        "bandwidth",
        "mtotal",
        "percent",
        "promo",
        "firsts",
    }
)
_CYCLE_NAMES = frozenset(c.value for c in PRICED_CYCLES)
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def _kept_field(name: str) -> bool:
    normal = name.lower()
    if normal in READ_FIELDS or normal in HARMLESS_FIELDS:
        return True
    return "".join(ch for ch in normal if ch not in "-_ \t") in _CYCLE_NAMES


def shareable(body: Any) -> Any:
    """``body`` with only what a capture may share: read and harmless fields as sent; of any other
    field, numbers, booleans, nulls, numeric text and the shape of its objects and lists."""

    def keep(node: Any, named: bool) -> Any:
        if isinstance(node, dict):
            kept = {}
            for key, value in node.items():
                item = keep(value, _kept_field(str(key)))
                if item is not _DROP:
                    kept[key] = item
            return kept
        if isinstance(node, list):
            return [item for item in (keep(value, named) for value in node) if item is not _DROP]
        if named or node is None or isinstance(node, bool | int | Decimal):
            return node
        if isinstance(node, str) and len(node) <= 40 and _NUMBER_TEXT.fullmatch(node):
            return node
        return _DROP

    return keep(body, True)


_DROP = object()


def _leak(text: str, secrets: Sequence[str], *, shapes: bool = True) -> str | None:
    """What secret ``text`` holds, named without its value; None when it holds none."""
    for secret in secrets:
        if secret and any(spelling in text for spelling in secret_spellings(secret)):
            return "the API key (in one of the spellings it travels in)"
    if shapes and secret_shaped(text):
        return "a secret-shaped value (a private key, a credential, a password or token field)"
    return None


def _prepare(directory: Path) -> None:
    """Refuse a directory that is a symbolic link or holds anything; create it when missing."""
    if directory.is_symlink():
        raise CaptureError(f"{directory}: is a symbolic link; capture into a new or empty directory")
    if directory.exists():
        if not directory.is_dir():
            raise CaptureError(f"{directory}: is not a directory")
        if any(directory.iterdir()):
            raise CaptureError(
                f"{directory}: is not empty; a capture goes into a new or empty directory, "
                "so that it never overwrites or mixes with other files"
            )
    directory.mkdir(parents=True, exist_ok=True)


def _create(path: Path, text: str) -> None:
    """Write a new file; never through a symbolic link, never over an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def write_capture(
    directory: Path,
    answers: Sequence[Answer],
    *,
    secrets: Sequence[str] = (),
    source: str = "",
) -> Path:
    """Write every answer and the manifest into ``directory``; return the manifest's path.

    Each body is first reduced to what :func:`shareable` keeps. Raises :class:`CaptureError`,
    writing nothing, when any answer's text still holds one of ``secrets`` (the API key) in any
    spelling or a secret-shaped value, when two answers would share a file, or when ``directory``
    is a symbolic link or not empty.
    """
    texts: dict[str, str] = {}
    entries: list[dict[str, Any]] = []
    for answer in answers:
        name = _file_name(answer.action, answer.params)
        if name in texts:
            raise CaptureError(f"{name}: two answers for {answer.action} with the same parameters")
        # The key anywhere in the answer, even in a field that would not be written, refuses the
        # capture (the client replaces it before this, so something is wrong); secret-shaped values
        # are looked for in what would be written.
        text = dumps(shareable(answer.body))
        leak = _leak(text, secrets) or _leak(dumps(answer.body), secrets, shapes=False)
        if leak is not None:
            raise CaptureError(f"{name}: the answer still holds a secret ({leak}); nothing was written")
        texts[name] = text
        entry: dict[str, Any] = {"action": answer.action, "params": dict(answer.params), "file": name}
        if answer.status != 200:
            entry["status"] = answer.status
        entries.append(entry)
    manifest = {
        "format": FORMAT,
        "note": _NOTE,
        "captured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "deny_list": sorted(DENY_FIELDS),
        "answers": entries,
    }
    try:
        _prepare(directory)
        for name, text in texts.items():
            _create(directory / name, text)
        path = directory / MANIFEST
        _create(path, dumps(manifest))
    except OSError as exc:
        raise CaptureError(f"{directory}: cannot write the capture ({exc.strerror or exc})") from None
    return path


@dataclass(frozen=True, repr=False)
class Capture:
    """A capture as read back: each answer's body bytes by :func:`answer_key`."""

    directory: Path
    bodies: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = field(default_factory=dict)
    #: Answers captured with an HTTP status other than 200, by the same key.
    statuses: dict[tuple[str, tuple[tuple[str, str], ...]], int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Capture({str(self.directory)!r}, answers={len(self.bodies)})"


def load_capture(directory: Path) -> Capture:
    """Read a capture written by :func:`write_capture`; any problem raises :class:`CaptureError`."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaptureError(f"{manifest_path}: not found (is {directory} a capture?)") from None
    except (OSError, ValueError) as exc:
        raise CaptureError(f"{manifest_path}: cannot be read ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CaptureError(f"{manifest_path}: not a format-{FORMAT} cost-sync capture manifest")
    entries = manifest.get("answers")
    if not isinstance(entries, list):
        raise CaptureError(f"{manifest_path}: answers: must be a list")
    bodies: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
    statuses: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for index, entry in enumerate(entries):
        where = f"{manifest_path}: answers[{index}]"
        if not isinstance(entry, dict):
            raise CaptureError(f"{where}: must be an object")
        action, params, name = entry.get("action"), entry.get("params", {}), entry.get("file")
        if not isinstance(action, str) or not isinstance(params, dict) or not isinstance(name, str):
            raise CaptureError(f"{where}: needs action, params and file")
        if "/" in name or "\\" in name or name.startswith("."):
            raise CaptureError(f"{where}: file must be a plain file name in the capture directory")
        try:
            body = (directory / name).read_bytes()
            json.loads(body)
        except (OSError, ValueError) as exc:
            raise CaptureError(f"{directory / name}: cannot be read as JSON ({exc})") from None
        key = answer_key(action, {str(k): str(v) for k, v in params.items()})
        bodies[key] = body
        status = entry.get("status", 200)
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            raise CaptureError(f"{where}: status must be an HTTP status code")
        if status != 200:
            statuses[key] = status
    return Capture(directory=directory, bodies=bodies, statuses=statuses)


def _error(action: str, message: str) -> Response:
    return Response(json.dumps([{"result": "error", "action": action, "message": message}]), media_type=_JSON)


class ReplayServer:
    """Serves a :class:`Capture` on the Hostwinds protocol on a real socket; an async context manager.

    ``api_key`` None accepts any key; otherwise only that key (else the documented auth error).
    """

    def __init__(
        self, capture: Capture, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.capture = capture
        self._api_key = api_key
        self._host = host
        self._port = port
        self._server: AppServer | None = None
        #: action -> API requests received.
        self.requests: dict[str, int] = {}
        #: Requests the capture had no answer for, as (action, parameters).
        self.missing: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        self.app = Starlette(
            routes=[
                Route(API_PATH, self._api, methods=["POST"]),
                Route("/", self._api, methods=["POST"]),
            ]
        )

    def __repr__(self) -> str:
        return f"ReplayServer({self.capture!r})"

    @property
    def url(self) -> str:
        """The API endpoint, e.g. ``http://127.0.0.1:43123/cloud/api.php``; valid after start()."""
        if self._server is None:
            raise RuntimeError("the replay server is not started")
        return self._server.base_url + API_PATH

    async def start(self) -> None:
        """Bind and start serving."""
        if self._server is not None:
            raise RuntimeError("the replay server is already started")
        server = AppServer(self.app, host=self._host, port=self._port, name="replay-hostwinds")
        await server.start()
        self._server = server
        _log.info("replay.started", url=self.url, answers=len(self.capture.bodies), note=_REPLAY_NOTE)

    async def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
            _log.info("replay.stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _api(self, request: Request) -> Response:
        form = form_fields(await request.body())
        action = form.pop("action", "")
        given = form.pop("API", "")
        self.requests[action] = self.requests.get(action, 0) + 1
        if self._api_key is not None and not hmac.compare_digest(given.encode(), self._api_key.encode()):
            return Response(json.dumps(_AUTH_ERROR), media_type=_JSON)
        if action in WRITE_ACTIONS or action not in READ_ONLY_ACTIONS:
            return _error(action, "Invalid Action.")
        key = answer_key(action, form)
        body = self.capture.bodies.get(key)
        if body is None:
            self.missing.append(key)
            _log.warning("replay.not_captured", action=action, params=dict(key[1]))
            return _error(action, "Not in this capture (cost-sync replay).")
        return Response(
            body,
            status_code=self.capture.statuses.get(key, 200),
            media_type=_JSON,
            headers={"X-Replay": "hostwinds"},
        )
