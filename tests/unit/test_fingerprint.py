"""The fingerprint is written and read in one module: what is written reads back as the same instance."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cost_sync.domain.fingerprint import (
    fingerprint,
    instance_from_fingerprint,
    parse_fingerprint,
    same_fingerprint,
)
from cost_sync.domain.models import parse_instance

_TEXT = st.none() | st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_ "),
    min_size=1,
    max_size=20,
).filter(lambda t: t.strip() == t and t)


@given(
    serviceid=st.integers(min_value=1, max_value=2**31 - 1),
    product_id=st.none() | st.integers(min_value=1, max_value=2**31 - 1),
    billingcycle=_TEXT,
    hourly=st.booleans(),
    disk_type=_TEXT,
    server_uuid=st.none() | st.uuids().map(str),
    managed=st.booleans(),
)
def test_what_is_written_reads_back(
    serviceid: int,
    product_id: int | None,
    billingcycle: str | None,
    hourly: bool,
    disk_type: str | None,
    server_uuid: str | None,
    managed: bool,
) -> None:
    instance = parse_instance(
        {
            "serviceid": serviceid,
            "product_id": product_id,
            "billingcycle": billingcycle,
            "hourly": int(hourly),
            "disk_type": disk_type,
            "server_uuid": server_uuid,
        }
    )
    text = fingerprint(instance, managed=managed)
    parsed = parse_fingerprint(text)
    assert parsed is not None
    assert parsed.managed is managed
    back = instance_from_fingerprint(serviceid, text)
    assert back is not None
    assert (back.product_id, back.billingcycle, back.hourly, back.disk_type) == (
        instance.product_id,
        instance.billingcycle,
        instance.hourly,
        instance.disk_type,
    )
    assert back.server_uuid == (instance.server_uuid.lower() if instance.server_uuid else None)
    # Read back and written again, it is the same fingerprint: a run would not ask again.
    assert same_fingerprint(text, back, managed=managed)


def test_text_that_is_not_a_fingerprint_reads_as_none() -> None:
    assert parse_fingerprint("no equals sign") is None
    assert instance_from_fingerprint(7, "product_id=abc;billingcycle=Monthly") is None
