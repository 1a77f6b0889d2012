"""What Hostwinds sends that cost-sync must not keep: secret fields, the API key, unsafe text.

One list of secret field names (:func:`cost_sync.domain.redact.is_secret_field`) decides what
captures and ``doctor`` drop; the key is scrubbed from a body, in every spelling, before it is
parsed; text fields are kept as one printable line of at most :data:`TEXT_MAX` characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cost_sync.domain.models import (
    INSTANCE_FIELDS,
    storable_text,
)
from cost_sync.domain.redact import (
    REDACTED,
    SECRET_FIELD_NAMES,
    SECRET_FIELD_WORDS,
    has_secret,
    is_secret_field,
    redact,
)

__all__ = [
    "DENY_FIELDS",
    "TEXT_MAX",
    "clean_text",
    "is_denied_field",
    "kept_fields",
    "sanitise",
    "scrub_body",
]


#: Fields removed from every body ``sanitised_body`` returns (``doctor --capture`` writes only
#: sanitised bodies): :func:`cost_sync.domain.redact.is_secret_field`'s names, and any field whose name
#: contains one of its words. Any string holding the API key (in any spelling) is dropped as well.
DENY_FIELDS = SECRET_FIELD_NAMES | frozenset(SECRET_FIELD_WORDS)


def is_denied_field(name: str) -> bool:
    """True for a secret field name (:func:`cost_sync.domain.redact.is_secret_field`, the one list)."""
    return is_secret_field(name)


def sanitise(value: Any, *, secret: str = "") -> Any:
    """``value`` with secret fields removed at any depth, and strings holding ``secret`` (in any
    spelling, or as the client already replaced it, ``[redacted]``) dropped."""
    secrets = (secret,) if secret else ()

    def holds_secret(item: Any) -> bool:
        return isinstance(item, str) and (REDACTED in item or has_secret(item, secrets))

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: clean(item)
                for key, item in node.items()
                if not is_secret_field(str(key)) and not holds_secret(item)
            }
        if isinstance(node, list):
            return [clean(item) for item in node if not holds_secret(item)]
        return node

    return clean(value)


_REDACTED_BYTES = REDACTED.encode()


def scrub_body(content: bytearray, spellings: tuple[bytes, ...]) -> bytearray:
    """The body with every spelling of the key replaced by ``[redacted]``, before it is parsed.

    A key Hostwinds echoes back (in an error, a product name, a price cell) then reaches nothing
    downstream in any spelling. The replacement holds no JSON-special character, so the body
    stays valid JSON wherever the key was. ``in`` first: a body without the key is not copied.
    """
    if b"\\u00" in content:
        # An ASCII character written as a JSON escape ("\u0068" for "h") would let the key through
        # spelled that way: such escapes are written as the characters they stand for (the same
        # JSON), except a quote, a backslash and control characters, which must stay escaped.
        content = bytearray(_ASCII_ESCAPE.sub(_unescape_ascii, content))
    for spelling in spellings:
        if spelling in content:
            content = content.replace(spelling, _REDACTED_BYTES)
    return content


# An escape \u00XX for a printable ASCII character, not itself escaped (an even number of
# backslashes before it).
_ASCII_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u00([2-7][0-9A-Fa-f])")


def _unescape_ascii(match: re.Match[bytes]) -> bytes:
    char = int(match.group(2), 16)
    if char in (0x22, 0x5C, 0x7F):
        return match.group(0)
    return match.group(1) + bytes([char])


#: The longest text from Hostwinds an instance or a plan keeps (product names, statuses...).
TEXT_MAX = 200


#: Short texts already cleaned (a fleet repeats a handful of names, cycles and statuses across
#: thousands of instances): at most _CLEAN_MAX entries of at most TEXT_MAX characters.
_CLEANED: dict[str, str] = {}
_CLEAN_MAX = 4096
_HEX_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")


def clean_text(value: Any) -> Any:
    """A text field from Hostwinds as cost-sync keeps it: one printable line of at most
    :data:`TEXT_MAX` characters, secret-shaped values redacted; anything else as it is.

    Text PostgreSQL cannot store (a NUL, a lone surrogate) is left as it is: the model makes it
    unknown, and the client logs it as dropped.
    """
    if not isinstance(value, str):
        return value
    cleaned = _CLEANED.get(value)
    if cleaned is not None:
        return cleaned
    if _HEX_ID.fullmatch(value):
        # A uuid (one per instance, so never seen twice): nothing in it can be secret-shaped.
        return value
    if not storable_text(value):
        return value
    if len(value) > TEXT_MAX:
        # Not kept: the memo would hold the long text (memory stays bounded whatever is sent).
        return redact(value, limit=TEXT_MAX)
    cleaned = redact(value, limit=TEXT_MAX)
    if len(_CLEANED) < _CLEAN_MAX:
        _CLEANED[value] = cleaned
    return cleaned


def kept_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an Instance keeps, their text cleaned (:func:`clean_text`)."""
    # The memo is asked inline: this runs for every field of 100,000 instances.
    memo = _CLEANED.get
    return {
        key: (memo(value) or clean_text(value)) if value.__class__ is str else value
        for key, value in obj.items()
        if key in INSTANCE_FIELDS
    }
