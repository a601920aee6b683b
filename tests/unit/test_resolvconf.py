"""SPEC section 7 transformations on a table of inputs."""

import pytest

from networkd import resolvconf

OURS = "127.0.0.1"

CASES = [
    ("empty", "", "nameserver 127.0.0.1\n", "", []),
    (
        "plain",
        "nameserver 10.0.0.2\n",
        "nameserver 127.0.0.1\nnameserver 10.0.0.2\n",
        "nameserver 10.0.0.2\n",
        ["10.0.0.2"],
    ),
    (
        "keeps comments search domain options order",
        "# generated\ndomain example\nsearch a.example b.example\nnameserver 10.0.0.2\n"
        "options ndots:2 timeout:1\nnameserver fd00::53\n",
        "nameserver 127.0.0.1\n# generated\ndomain example\nsearch a.example b.example\n"
        "nameserver 10.0.0.2\noptions ndots:2 timeout:1\nnameserver fd00::53\n",
        "# generated\ndomain example\nsearch a.example b.example\nnameserver 10.0.0.2\n"
        "options ndots:2 timeout:1\nnameserver fd00::53\n",
        ["10.0.0.2", "fd00::53"],
    ),
    (
        "ours moved first, not duplicated",
        "nameserver 10.0.0.2\nnameserver 127.0.0.1\nnameserver 10.0.0.3\n",
        "nameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n",
        "nameserver 10.0.0.2\nnameserver 10.0.0.3\n",
        ["10.0.0.2", "10.0.0.3"],
    ),
    (
        "rotate removed as a whole word",
        "options rotate timeout:1 rotated\noptions rotate\nnameserver 10.0.0.2\n",
        "nameserver 127.0.0.1\noptions timeout:1 rotated\nnameserver 10.0.0.2\n",
        "options timeout:1 rotated\nnameserver 10.0.0.2\n",
        ["10.0.0.2"],
    ),
    (
        "non-IP nameservers dropped",
        "nameserver dns.example\nnameserver\nnameserver 10.0.0.2#53\nnameserver 10.0.0.2\n"
        "nameserver 300.1.1.1\n",
        "nameserver 127.0.0.1\nnameserver 10.0.0.2\n",
        "nameserver 10.0.0.2\n",
        ["10.0.0.2"],
    ),
    (
        "garbage kept as is, CRLF handled",
        "\x00\x01 garbage\r\nnameserver 10.0.0.2\r\n",
        "nameserver 127.0.0.1\n\x00\x01 garbage\nnameserver 10.0.0.2\n",
        "\x00\x01 garbage\nnameserver 10.0.0.2\n",
        ["10.0.0.2"],
    ),
    (
        "duplicates in upstreams once",
        "nameserver 10.0.0.2\nnameserver 10.0.0.2\n",
        "nameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.2\n",
        "nameserver 10.0.0.2\nnameserver 10.0.0.2\n",
        ["10.0.0.2"],
    ),
]


@pytest.mark.parametrize("name,text,rendered,restored,ups", CASES, ids=[c[0] for c in CASES])
def test_table(name: str, text: str, rendered: str, restored: str, ups: list) -> None:
    assert resolvconf.render(text, OURS) == rendered
    assert resolvconf.render(rendered, OURS) == rendered  # idempotent: no write loop
    assert resolvconf.restore(text, OURS) == restored
    assert resolvconf.restore(rendered, OURS) == restored
    assert resolvconf.upstreams(text, OURS) == ups
    assert resolvconf.upstreams(rendered, OURS) == ups


def test_dns_ip_of_listen_host() -> None:
    assert resolvconf.dns_ip("127.0.0.1") == "127.0.0.1"
    assert resolvconf.dns_ip("0.0.0.0") == "127.0.0.1"
    assert resolvconf.dns_ip("::") == "::1"
    assert resolvconf.dns_ip("[fd00::1]") == "fd00::1"


def test_ipv6_ours_and_equivalent_spellings() -> None:
    text = "nameserver 0:0:0:0:0:0:0:1\nnameserver 10.0.0.2\n"
    assert resolvconf.render(text, "::1") == "nameserver ::1\nnameserver 10.0.0.2\n"
    assert resolvconf.upstreams("nameserver fe80::1%eth0\n", OURS) == []
