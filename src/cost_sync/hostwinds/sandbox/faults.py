"""The faults the sandbox injects: latency, 503 bursts, HTML pages, 429 with ``Retry-After``, auth
errors and per-service answers, set in-process or through ``POST /_sandbox/faults``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Faults",
]


# ----------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------


@dataclass
class Faults:
    """Misbehaviour to inject, applied before dispatch in this order: latency, 503, 429, HTML, auth.

    Counters (``*_next``) are consumed one per affected request. When ``actions`` is set, only
    requests for those actions are affected (and consume counters); None means every action.
    """

    latency_seconds: float = 0.0
    fail_next: int = 0
    html_next: int = 0
    auth_error: bool = False
    rate_limit_next: int = 0
    retry_after: int = 1
    actions: frozenset[str] | None = None

    def applies_to(self, action: str) -> bool:
        """True when requests for ``action`` are subject to these faults."""
        return self.actions is None or action in self.actions

    def to_json(self) -> dict[str, Any]:
        """These faults as a JSON object (the control endpoint's answer)."""
        data = dataclasses.asdict(self)
        data["actions"] = None if self.actions is None else sorted(self.actions)
        return data

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` (JSON values) applied; a bad field or value raises ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(
                f"unknown fault field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "latency_seconds":
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise ValueError("latency_seconds must be a number")
                values[name] = _non_negative(name, float(value))  # float-ok: seconds
            elif name == "auth_error":
                if not isinstance(value, bool):
                    raise ValueError("auth_error must be true or false")
                values[name] = value
            elif name == "actions":
                if value is not None and (
                    not isinstance(value, list | tuple | set | frozenset)
                    or not all(isinstance(a, str) for a in value)
                ):
                    raise ValueError("actions must be a list of action names, or null for every action")
                values[name] = None if value is None else frozenset(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} must be an integer")
                values[name] = _non_negative(name, value)
        return dataclasses.replace(self, **values)


def _non_negative(name: str, value: float) -> Any:
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value
