"""The one home of what counts as a secret, and the one way text from Hostwinds reaches a log, an
error, ``--json``, the ledger or a terminal: short and redacted.

Guarantees:

- :func:`is_secret_field` is the only list of secret field names. Parsing, ``doctor --capture``,
  errors, unpriced details and the ledger all ask it, so they cannot disagree.
- :func:`secret_spellings` gives every spelling a secret travels in: as is, upper and lower case,
  form- and percent-encoded (either case of hex digits), JSON-escaped, hex, and base64 (standard
  and URL-safe, at each of the three alignments it can have inside a longer base64 text).
- :func:`redact`'s result is at most ``limit`` characters, one line of printable characters; every
  spelling of the given secrets is replaced, so is the value of every field :func:`is_secret_field`
  names (written as ``name=value``, ``name: value`` or ``"name": "value"``, whatever the text
  around it), and so is every secret-shaped value (:func:`secret_shaped`: a private key, a Basic
  or Bearer credential).
- :func:`terminal_text` shows control characters escaped, so text printed to a terminal cannot
  move the cursor, clear the screen or start a new line; :func:`csv_cell` neutralises a cell a
  spreadsheet would read as a formula.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import json
import re
from collections.abc import Iterable, Sequence
from typing import IO
from urllib.parse import quote, quote_plus

__all__ = [
    "REDACTED",
    "SECRET_FIELD_NAMES",
    "SECRET_FIELD_WORDS",
    "SafeCsvWriter",
    "csv_cell",
    "for_terminal",
    "has_secret",
    "is_secret_field",
    "redact",
    "scrub_secrets",
    "secret_shaped",
    "secret_spellings",
    "stored_text",
    "terminal_text",
]

REDACTED = "[redacted]"

#: Field names that are a secret as a whole, compared in lower case without ``-``, ``_``, ``.``
#: and spaces.
SECRET_FIELD_NAMES = frozenset({"api", "key", "pw", "pwd", "auth", "authorization", "credentials"})
#: Words that make any field name containing them a secret (``root_password``, ``vncpass``,
#: ``access_token``, ``ssh_keys``...), compared as :data:`SECRET_FIELD_NAMES` are.
SECRET_FIELD_WORDS = (
    "pass",  # rootpass, vncpass and the three below
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "configkey",
    "apikey",
    "privatekey",
    "sshkey",
    "credential",
    "cookie",
)

#: Spellings shorter than this are not searched for: too likely to occur by chance.
_MIN_SPELLING = 6


def _field_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_. \t\"'")


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    if key in SECRET_FIELD_NAMES or any(word in key for word in SECRET_FIELD_WORDS):
        return True
    # root_pw, vnc_pwd, admin_pw: "pw" as the last word of a name.
    return key.endswith(("pw", "pwd")) and len(key) <= 16


def is_secret_field(name: str) -> bool:
    """True when a field called ``name`` holds a secret (its value is never kept or shown)."""
    return _secret_key(_field_key(name)[:64])


@functools.lru_cache(maxsize=16)
def secret_spellings(secret: str) -> tuple[str, ...]:
    """Every spelling ``secret`` travels in that is long enough to search for, longest first."""
    if not secret:
        return ()
    raw = secret.encode("utf-8")
    spellings = {secret, secret.upper(), secret.lower()}
    for encoded in (quote_plus(secret, safe=""), quote(secret, safe="")):
        # As sent (form-encoded), with either case of hex digits, or the whole text re-cased.
        spellings.update({encoded, _lower_hex_escapes(encoded), encoded.upper(), encoded.lower()})
    for escaped in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        # PHP's json_encode (Hostwinds) also writes "/" as "\/".
        upper = re.sub(r"\\u[0-9a-f]{4}", lambda m: "\\u" + m.group(0)[2:].upper(), escaped)
        spellings.update({escaped, escaped.replace("/", "\\/"), upper, upper.replace("/", "\\/")})
    hexed = binascii.hexlify(raw).decode()
    spellings.update({hexed, hexed.upper()})
    for pad in range(3):
        # Inside a longer base64 text the secret starts at one of three alignments; the characters
        # that depend only on the secret's own bytes are the same whatever surrounds it.
        encoded = base64.b64encode(b"\0" * pad + raw).decode()
        start = (pad * 4 + 2) // 3 if pad else 0
        end = (len(raw) + pad) // 3 * 4
        core = encoded[start:end]
        spellings.update({core, core.replace("+", "-").replace("/", "_")})
        if pad == 0:
            spellings.update({encoded, encoded.rstrip("="), base64.urlsafe_b64encode(raw).decode()})
    return tuple(sorted((s for s in spellings if len(s) >= _MIN_SPELLING), key=len, reverse=True))


def _lower_hex_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


@functools.lru_cache(maxsize=16)
def _spelling_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    spellings = sorted({s for secret in secrets for s in secret_spellings(secret)}, key=len, reverse=True)
    if not spellings:
        return None
    return re.compile("|".join(re.escape(s) for s in spellings))


def has_secret(text: str, secrets: Iterable[str]) -> bool:
    """True when ``text`` holds any spelling of any of ``secrets``."""
    pattern = _spelling_pattern(tuple(s for s in secrets if s))
    return pattern is not None and pattern.search(text) is not None


def scrub_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every spelling of every secret replaced by ``[redacted]`` (nothing else changed)."""
    pattern = _spelling_pattern(tuple(s for s in secrets if s))
    if pattern is None:
        return text
    return pattern.sub(REDACTED, text)


# A field name, then = or :. Whether the name is a secret is asked of is_secret_field.
_FIELD = re.compile(r"""(["']?)([A-Za-z_][\w.-]{0,63})\1\s*[:=]\s*""")
# A field's value: quoted, or bare up to a separator.
_VALUE = re.compile(r"""\"(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;&}\]]+""")
# Values that are secret whatever field holds them.
_SECRET_VALUE = re.compile(
    r"""(?imsx)
    # cloud-init's chpasswd block ("list: |" then user:password lines), up to the next top-level key
    chpasswd:.*?(?=^\S|\Z)
    | -----BEGIN[ A-Z0-9]*PRIVATE\ KEY-----.*?(?:-----END[ A-Z0-9]*PRIVATE\ KEY-----|\Z)
    | \b(?:Basic|Bearer|Token)\s+[A-Za-z0-9+/=._~-]{8,}
    | \b(?:ghp|gho|github_pat|glpat|xox[abprs]|sk|pk)[-_][A-Za-z0-9_-]{16,}
    | \bAKIA[0-9A-Z]{16}\b
    | ://[^/\s:@]+:[^/\s@]+@
    """
)


def secret_shaped(text: str) -> bool:
    """True when ``text`` holds a secret-shaped value or field (a private key, ``password=...``)."""
    if _SECRET_VALUE.search(text):
        return True
    return any(is_secret_field(m.group(2)) for m in _FIELD.finditer(text))


def _redact_fields(text: str) -> str:
    out: list[str] = []
    pos = 0
    while (match := _FIELD.search(text, pos)) is not None:
        out.append(text[pos : match.end()])
        pos = match.end()
        if is_secret_field(match.group(2)):
            value = _VALUE.match(text, pos)
            if value is not None and text[pos : pos + 1] not in ("{", "["):
                out.append(REDACTED)
                pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def _redact_value(match: re.Match[str]) -> str:
    found = match.group(0)
    if found.startswith("://"):
        return "://" + REDACTED + "@"
    return REDACTED


def redact(value: object, *, limit: int = 200, secrets: Iterable[str] = ()) -> str:
    """``value`` as one short printable line with secrets and secret-shaped values replaced."""
    # Cut first (generously) so a 200 MB value costs no more than a short one.
    secrets = tuple(s for s in secrets if s)
    window = max(limit, 1) * 4
    longest = max((len(s) for secret in secrets for s in secret_spellings(secret)), default=0)
    # Scrubbed before the cut, so a spelling across the cut cannot leave half a key behind.
    text = scrub_secrets(str(value)[: window + longest], secrets)[:window]
    text = _SECRET_VALUE.sub(_redact_value, text)
    text = _redact_fields(text)
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def stored_text(value: str | None) -> str | None:
    """Text from Hostwinds as a store hands it out (``report``, ``explain``): redacted and short,
    since rows written before text was cleaned at parsing may hold a secret or 10 MiB."""
    return None if value is None else redact(value)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape(ch: str) -> str:
    named = _NAMED_ESCAPES.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_text(value: object) -> str:
    """``value`` for a terminal: every character that is not printable (escape, newline, bidi
    overrides, line separators...) shown escaped, so the text is one line that cannot move the
    cursor, clear the screen or set a window title."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


#: What a spreadsheet reads as the start of a formula (OWASP's "CSV injection" list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def csv_cell(value: object) -> str:
    """``value`` as a CSV cell a spreadsheet will not run: a text starting (after any spaces or
    newlines) with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``; a
    number (``-5.00``) stays a number."""
    text = "" if value is None else str(value)
    # Leading spaces and newlines too: some spreadsheets trim them before they look.
    start = text.lstrip(" \n")
    if start.startswith(_FORMULA_START) and _NUMBER.fullmatch(start.strip()) is None:
        return "'" + text
    return text


class SafeCsvWriter:
    """A ``csv.writer`` whose every cell passes :func:`csv_cell`: spreadsheet-safe CSV."""

    def __init__(self, out: IO[str]) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, row: Sequence[object]) -> None:
        """Write one row, each cell neutralised if a spreadsheet would read it as a formula."""
        self._writer.writerow([csv_cell(cell) for cell in row])


def for_terminal(lines: Iterable[str]) -> str:
    """Lines joined for printing to a terminal, each one line with its control characters escaped."""
    return "\n".join(terminal_text(line) for line in lines)
