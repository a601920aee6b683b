"""Flags: the Go daemon's single-dash spelling, defaults, and clear errors."""

import pytest

from networkd.config import Config, ConfigError, parse_args, read_flag_file


def test_go_style_flags_parse() -> None:
    config, version = parse_args(
        [
            "-etcd.endpoint",
            "http://10.0.0.1:2379,https://10.0.0.2:2379",
            "-net.interface=eth1",
            "-tinydns",
            "-acl=false",
            "-godns.addr",
            "127.0.0.1:5353",
            "-vip.fencing=strict",
        ]
    )
    assert not version and config is not None
    assert config.etcd_endpoints == ("http://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert config.net_interface == "eth1"
    assert config.tinydns is True and config.acl is False
    assert config.dns_host_port == ("127.0.0.1", 5353)
    assert config.vip_fencing == "strict"


def test_defaults_match_the_go_daemon() -> None:
    config, _ = parse_args([])
    assert config == Config()
    assert config is not None
    assert config.godns_addr == "127.0.0.1:53" and config.api_addr == "127.0.0.1:3000"
    assert config.lock_filename == "/var/run/lain-networkd.pid" and config.net_interface == "eth0"


def test_version_flag_short_circuits() -> None:
    assert parse_args(["-version"]) == (None, True)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["-vip.fencing=maybe"], "-vip.fencing"),
        (["-etcd.endpoint=10.0.0.1:2379"], "-etcd.endpoint"),
        (["-godns.addr=localhost"], "-godns.addr"),
        (["-api.addr=127.0.0.1:99999"], "-api.addr"),
        (["-dns.replicas=0"], "-dns.replicas"),
    ],
)
def test_bad_values_name_the_flag(args: list, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag.replace(".", r"\.")):
        parse_args(args)


def test_flag_file_is_read_and_command_line_wins(tmp_path: str) -> None:
    path = f"{tmp_path}/flags"
    with open(path, "w") as f:
        f.write("# comment\n-hostname=fromfile -dns.ttl=30\n-webrouter\n")
    assert read_flag_file(path) == ["-hostname=fromfile", "-dns.ttl=30", "-webrouter"]
    config, _ = parse_args([f"-config={path}", "-hostname=cli"])
    assert config is not None
    assert config.hostname == "cli" and config.dns_ttl == 30 and config.webrouter


def test_section_digest_changes_only_with_named_fields() -> None:
    a, b = Config(), Config(dns_ttl=5)
    assert a.section_digest(["api_addr"]) == b.section_digest(["api_addr"])
    assert a.section_digest(["dns_ttl"]) != b.section_digest(["dns_ttl"])
