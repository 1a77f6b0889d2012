"""The one way text from Hostwinds reaches a log, an error, ``--json`` or the ledger: short and redacted.

Guarantees: the result is at most ``limit`` characters, one line of printable characters, the given
secrets are replaced, and so is the value of every secret-shaped field (``password``, ``rootpass``,
``configkey``, ``secret``, ``token``, ``api_key``... written as ``name=value``, ``name: value`` or
``"name": "value"``), whatever the text around it. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "redact"]

REDACTED = "[redacted]"

# A field name containing a secret-shaped word, then = or :, then its value (quoted or bare).
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (["']?[\w.-]*(?:pass(?:word|wd|phrase)?|configkey|secret|token|api[_-]?key|apikey)[\w.-]*["']?
     \s*[:=]\s*)
    ("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;&}\]]+)
    """
)


def redact(value: object, *, limit: int = 200, secrets: Iterable[str] = ()) -> str:
    """``value`` as one short printable line with secrets and secret-shaped fields replaced."""
    # Cut first (generously) so a 200 MB value costs no more than a short one.
    text = str(value)[: max(limit, 1) * 4]
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + REDACTED, text)
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text
