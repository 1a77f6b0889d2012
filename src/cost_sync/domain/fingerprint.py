"""What an instance's cached cycle prices depend on, written and read back in this one place.

A price observation is stored with the fingerprint of the instance it was asked for: the values of
:data:`FINGERPRINT_FIELDS` as stable, readable text (``product_id=101;billingcycle=Monthly;...``).
A run asks again when the fingerprint changed (:func:`same_fingerprint`); ``explain`` reads the
instance back from it (:func:`parse_fingerprint`) to price a row from the cache alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from cost_sync.domain.models import Instance

__all__ = [
    "FINGERPRINT_FIELDS",
    "Fingerprint",
    "fingerprint",
    "instance_from_fingerprint",
    "parse_fingerprint",
    "same_fingerprint",
]

#: What an instance's cached cycle prices depend on: a change in any of these asks again.
FINGERPRINT_FIELDS = ("product_id", "billingcycle", "hourly", "disk_type", "managed", "server_uuid")
#: Where the server_uuid part starts: fingerprints cached before it was added end before it.
_UUID_PART = ";server_uuid="


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The fields of a stored fingerprint (:func:`parse_fingerprint`); absent ones are None."""

    product_id: int | None
    billingcycle: str | None
    hourly: bool
    disk_type: str | None
    managed: bool
    server_uuid: str | None

    def instance(self, serviceid: int) -> Instance:
        """The instance as it was when its prices were asked."""
        return Instance(
            serviceid=serviceid,
            product_id=self.product_id,
            billingcycle=self.billingcycle,
            hourly=self.hourly,
            disk_type=self.disk_type,
            server_uuid=self.server_uuid,
        )


def fingerprint(instance: Instance, *, managed: bool) -> str:
    """The values of :data:`FINGERPRINT_FIELDS` for one instance, as stable readable text.

    Written out by hand rather than from :class:`Fingerprint`: a run computes one per instance.
    """
    return (
        f"product_id={'' if instance.product_id is None else instance.product_id};"
        f"billingcycle={instance.billingcycle or ''};"
        f"hourly={int(instance.hourly)};"
        f"disk_type={instance.disk_type or ''};"
        f"managed={int(managed)}"
        f"{_UUID_PART}{(instance.server_uuid or '').strip().lower()}"
    )


def parse_fingerprint(text: str) -> Fingerprint | None:
    """The fields of a stored fingerprint, or None when the text is not one."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if not sep:
            return None
        fields[key] = value
    product = fields.get("product_id") or ""
    if product and not product.isdigit():
        return None
    return Fingerprint(
        product_id=int(product) if product else None,
        billingcycle=fields.get("billingcycle") or None,
        hourly=fields.get("hourly") == "1",
        disk_type=fields.get("disk_type") or None,
        managed=fields.get("managed") == "1",
        server_uuid=fields.get("server_uuid") or None,
    )


def instance_from_fingerprint(serviceid: int, text: str) -> Instance | None:
    """The instance fields a cached observation was asked with (its fingerprint), or None if unreadable."""
    parsed = parse_fingerprint(text)
    if parsed is None:
        return None
    try:
        return parsed.instance(serviceid)
    except ValueError:
        return None


def same_fingerprint(cached: str, instance: Instance, *, managed: bool) -> bool:
    """Whether a cached observation was asked for this instance as it is now.

    The server_uuid is part of it: a serviceid Hostwinds gives to another server must not reuse
    the old server's price. A fingerprint cached before that has no server_uuid part; its other
    fields decide until the observation is next refreshed (within max_price_age_seconds).
    """
    current = fingerprint(instance, managed=managed)
    if cached == current:
        return True
    return _UUID_PART not in cached and current.partition(_UUID_PART)[0] == cached
