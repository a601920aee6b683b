"""GET /v1/dns/config text, in the Go daemon's format."""

from networkd.bus.messages import (
    DomainEntry,
    DomainServers,
    HostsEntry,
    PortSpec,
    Upstreams,
    VipConfig,
)
from networkd.dns.config_dump import render, render_from_mirrors


def test_render_sections_and_lines() -> None:
    text = render(
        {
            "deployd.lain": DomainEntry(name="deployd.lain", ips=["10.0.0.2", "10.0.0.3"]),
            "*.lain": DomainEntry(name="*.lain", ips=["10.0.0.1", "bad"]),
            "node.lain": DomainEntry(name="node.lain", ips=[], type="node"),
            "*.web.lain": DomainEntry(name="*.web.lain", ips=[], type="webrouter"),
        },
        {"lain": DomainServers(domain="lain", servers=["10.0.0.9#53", "fd00::9#5353", "junk"])},
        {"upstreams": Upstreams(servers=["8.8.8.8", "1.1.1.1#5353"])},
        hosts={"localhost": HostsEntry(name="localhost", ips=["127.0.0.1", "::1"])},
        vips={
            "10.5.0.1": VipConfig(
                ip="10.5.0.1", app="webrouter", proc="worker", ports=[PortSpec(80)]
            )
        },
        node_address="192.168.0.7",
    )
    assert text == (
        "# exact domains\n"
        "deployd.lain [10.0.0.2 10.0.0.3]\n"
        "localhost [127.0.0.1 ::1]\n"
        "node.lain [192.168.0.7]\n"
        "\n# wildcard domains\n"
        "address=/lain/10.0.0.1\n"
        "address=/web.lain/10.5.0.1\n"
        "\n# domain servers (tinydns)\n"
        "server=/lain/10.0.0.9:53\n"
        "server=/lain/[fd00::9]:5353\n"
        "\n# name servers (synchronized with /etc/resolv.conf)\n"
        "nameserver 8.8.8.8:53\n"
        "nameserver 1.1.1.1:5353\n"
    )


def test_render_empty_and_from_mirrors() -> None:
    empty = render(None, None, None)
    for section in (
        "# exact domains",
        "# wildcard domains",
        "# domain servers (tinydns)",
        "# name servers (synchronized with /etc/resolv.conf)",
    ):
        assert section in empty
    mirrors = {
        ("watcher", "state.domains"): {"a.lain": DomainEntry(name="a.lain", ips=["10.0.0.1"])}
    }
    text = render_from_mirrors(lambda sender, topic: mirrors.get((sender, topic)))
    assert "a.lain [10.0.0.1]\n" in text
