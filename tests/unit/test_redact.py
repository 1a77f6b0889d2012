"""The one list of secret field names and the spellings of a secret, in every path that uses them:
parsing, capture, errors, unpriced details, the ledger; terminal and spreadsheet safety."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
import respx

from cost_sync.domain.models import Cycle, Unpriced, VpsRow
from cost_sync.domain.pricing import price_row
from cost_sync.domain.redact import (
    csv_cell,
    has_secret,
    is_secret_field,
    redact,
    scrub_secrets,
    secret_shaped,
    terminal_text,
)
from cost_sync.hostwinds.answers import price_cell_text, read_instances
from cost_sync.hostwinds.capture import Answer, CaptureError, write_capture
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sanitise import clean_text, sanitise
from tests.fakes import instance as raw_instance

#: Every name either of the two former lists held, and the names seen leaking from captures.
UNION = [
    "password",
    "passwd",
    "pass",
    "rootpass",
    "rootpassword",
    "root_password",
    "configkey",
    "api",
    "apikey",
    "API_KEY",
    "key",
    "secret",
    "token",
    "authtoken",
    "vncpassword",
    "sshkey",
    "ssh-key",
    "privatekey",
    "passphrase",
    "api_token",
    "access_token",
    "root_pw",
    "vncpass",
]
NOT_SECRET = ["serviceid", "product_name", "disk_type", "keyboard", "monkey", "status", "billingcycle"]


@pytest.mark.parametrize("name", UNION)
def test_every_path_uses_the_one_list(name: str, tmp_path: Path) -> None:
    """A field on the list is dropped by parsing and capture, and hidden in errors and unpriced details."""
    value = f"VALUE-{name}-9z"
    assert is_secret_field(name)
    # Capture and doctor's shape checks: sanitise drops the field at any depth.
    body = {"success": [{"serviceid": 5, name: value, "nested": {name: value, "ok": 1}}]}
    clean = sanitise(body)
    assert value not in repr(clean)
    assert clean == {"success": [{"serviceid": 5, "nested": {"ok": 1}}]}
    write_capture(tmp_path / name, [Answer("get_instances", {}, clean)])
    assert value not in (tmp_path / name / "get_instances.json").read_text()
    # Errors and the ledger: redact hides the value however the field is written.
    written = (f"{name}={value}", f"x {name}: {value} y", json.dumps({name: value}), f"?{name}={value}&a=1")
    for text in written:
        assert value not in redact(text), text
    # Parsing: a product name carrying the field keeps its text but not the value.
    instances = read_instances([raw_instance(7, product_name=f"plan {name}={value}")])
    assert value not in repr(instances)
    # Unpriced details: a price cell that is an object holding the field.
    row = VpsRow(id=uuid.uuid4(), hostwinds_instance_id="7", status="active", approximate_cost=None)
    cell = price_cell_text({name: value})
    result = price_row(row, instances[0], override=None, cycle_prices={Cycle.MONTHLY: cell}, plan=None)
    assert isinstance(result, Unpriced)
    assert value not in result.detail


@pytest.mark.parametrize("name", NOT_SECRET)
def test_ordinary_fields_are_kept(name: str) -> None:
    """The list is not so wide that it swallows the fields cost-sync reads."""
    assert not is_secret_field(name)
    assert redact(f"{name}=abc") == f"{name}=abc"


KEY = "hwKey+/0a1b2c=3d&e\u00e9-Secret9"


@pytest.mark.parametrize(
    "spelled",
    [
        KEY,
        KEY.upper(),
        quote_plus(KEY, safe=""),
        quote(KEY, safe=""),
        quote(KEY, safe="").lower(),
        quote(KEY, safe="").upper(),
        json.dumps(KEY)[1:-1].replace("/", "\\/"),
        json.dumps(KEY)[1:-1].replace("e9", "E9"),
        base64.b64encode(KEY.encode()).decode(),
        base64.urlsafe_b64encode(KEY.encode()).decode(),
        KEY.encode().hex(),
    ],
)
def test_every_spelling_of_the_key_is_found_and_replaced(spelled: str) -> None:
    """Each spelling the key travels in is replaced, inside other text too."""
    text = f"error: API={spelled}&action=get_instances"
    assert has_secret(text, [KEY])
    assert spelled not in scrub_secrets(text, [KEY])
    assert spelled not in redact(text, secrets=[KEY])


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"Basic ", b"user:"])
def test_the_key_inside_a_longer_base64_text_is_found_at_any_alignment(prefix: bytes) -> None:
    """Base64 of "user:KEY" (a Basic header) or of a form body: the key's own characters are found."""
    encoded = base64.b64encode(prefix + f"API={KEY}&x=1".encode()).decode()
    assert has_secret(encoded, [KEY])


def test_a_spelling_across_the_cut_leaves_no_half_key() -> None:
    """redact cuts long texts, but scrubs first: no prefix of the key survives at the cut."""
    for pad in range(780, 800):
        out = redact(" " * pad + "x" + KEY + " tail", limit=200, secrets=[KEY])
        assert KEY[:6] not in out


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
        "Authorization: Basic dXNlcjpodW50ZXIy",
        "Bearer abcdefghijklmnop",
        "https://user:hunter2@example.com/x",
        "#cloud-config\nchpasswd:\n  list: |\n    root:hunter2\npassword: hunter2",
        "https://example.com/cb?token=abc123456&x=1",
    ],
)
def test_secret_shaped_values_are_found_and_redacted(text: str) -> None:
    """Secret-shaped values are found whatever field holds them."""
    assert secret_shaped(text)
    out = redact(text)
    for secret in ("hunter2", "dXNlcjpodW50ZXIy", "abcdefghijklmnop", "b3BlbnNzaC1rZXk", "abc123456"):
        assert secret not in out


def test_clean_text_bounds_and_redacts_free_text() -> None:
    """A product name is one printable line of at most 200 characters, secrets redacted."""
    assert clean_text("Unmanaged Linux 1 CPU / 2 GB") == "Unmanaged Linux 1 CPU / 2 GB"
    long = clean_text("x" * 10 * 1024 * 1024)
    assert len(long) == 200
    assert "hunter2" not in clean_text("plan rootpass=hunter2")
    assert "hunter2" not in clean_text("plan\npassword: hunter2")
    assert clean_text(5) == 5


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain", "plain"),
        ("\x1b[2J\x1b]0;title\x07", "\\e[2J\\e]0;title\\x07"),
        ("a\nfleet monthly total $0.00", "a\\nfleet monthly total $0.00"),
        ("a\rb\tc", "a\\rb\\tc"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("\x9b31m", "\\x9b31m"),
        (None, ""),
    ],
)
def test_terminal_text_escapes_control_characters(text: str | None, shown: str) -> None:
    """Control characters are shown escaped; the result is one printable line."""
    out = terminal_text(text)
    assert out == shown
    assert out.isprintable()


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("=1+1", "'=1+1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-5.00", "-5.00"),
        ("+3", "+3"),
        ("9.99", "9.99"),
        ("plain", "plain"),
        (None, ""),
        (12, "12"),
    ],
)
def test_csv_cell_neutralises_formulas_and_keeps_numbers(value: object, cell: str) -> None:
    """A cell a spreadsheet would run gets a leading quote; numbers stay numbers."""
    assert csv_cell(value) == cell


def test_capture_refuses_the_key_in_any_spelling(tmp_path: Path) -> None:
    """The capture's last check finds the key form-encoded too (the way it is sent)."""
    leaky = [Answer("get_instances", {}, {"note": quote_plus(KEY, safe="")})]
    with pytest.raises(CaptureError):
        write_capture(tmp_path, leaky, secrets=[KEY])


def _json_escaped(text: str) -> str:
    """Every character of ``text`` as a JSON \\u escape: the same JSON string, spelled otherwise."""
    return "".join(f"\\u{ord(ch):04x}" for ch in text)


@respx.mock
async def test_the_key_spelled_with_json_escapes_is_replaced_before_parsing() -> None:
    """A product name holding the key written as \\u0068\\u0077... parses to the key itself: it
    is replaced all the same; an escaped backslash before "u0041" is left alone."""
    body = (
        '{"success": [{"serviceid": 7, "billingcycle": "Monthly", '
        f'"product_name": "plan {_json_escaped(KEY)}", "status": "a\\\\u0041\\u0022b"}}]}}'
    )
    respx.post("https://hw.test/api").mock(return_value=httpx.Response(200, text=body))
    async with httpx.AsyncClient() as http:
        client = HostwindsClient(http, KEY, url="https://hw.test/api", requests_per_second=None)
        [seven] = await client.get_instances()
    assert seven.product_name == "plan [redacted]"
    assert seven.status == 'a\\u0041"b'


@pytest.mark.parametrize("cell", [" =1+1", "\n=1+1", "  @SUM(A1)"])
def test_csv_cell_looks_past_leading_spaces_and_newlines(cell: str) -> None:
    """A formula after spaces or a newline is neutralised too; " -5.00" stays a number."""
    assert csv_cell(cell) == "'" + cell
    assert csv_cell(" -5.00") == " -5.00"
