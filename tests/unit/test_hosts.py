"""The hosts file parser: all addresses per name, garbage skipped."""

from hypothesis import given, settings
from hypothesis import strategies as st

from networkd import hosts


def test_parse_typical_file() -> None:
    text = (
        "127.0.0.1\tlocalhost\n"
        "::1 localhost ip6-localhost ip6-loopback  # comment\n"
        "# 10.0.0.9 commented.out\n"
        "10.0.0.1 Web.Example web\n"
        "10.0.0.2 web.example\n"
        "fd00::3 web.example\n"
        "10.0.0.1 web.example\n"
    )
    table = hosts.parse(text)
    assert table["localhost"] == ["127.0.0.1", "::1"]
    assert table["web.example"] == ["10.0.0.1", "10.0.0.2", "fd00::3"]
    assert table["web"] == ["10.0.0.1"]
    assert "commented.out" not in table


def test_garbage_lines_skipped() -> None:
    text = (
        "not-an-ip name\n"
        "10.0.0.1\n"
        "fe80::1%eth0 scoped\n"
        "10.0.0.2 " + "x" * 70 + " ok " + "a..b *.wild\n"
        "\x00\xff\n"
        "10.0.0.3 trailing.dot.\n"
    )
    assert hosts.parse(text) == {"ok": ["10.0.0.2"], "trailing.dot": ["10.0.0.3"]}


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_never_crashes(text: str) -> None:
    hosts.parse(text)
