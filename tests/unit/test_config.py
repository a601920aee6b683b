"""Flags: the Go daemon's single-dash spelling, defaults, and clear errors."""

import pytest

from networkd.config import MASK, Config, ConfigError, mask_secrets, parse_args, read_flag_file
from networkd.workers import all_specs, worker_config


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


# ------------------------------------------------------------------ least privilege

SECRET = "pw-unit-7f3a"


@pytest.mark.parametrize(
    "argv,masked",
    [
        (["-etcd.password", SECRET, "-verbose"], ["-etcd.password", MASK, "-verbose"]),
        (["-etcd.password=" + SECRET], ["-etcd.password=" + MASK]),
        (["--etcd.password=" + SECRET], ["--etcd.password=" + MASK]),
        (["-etcd.user", "root", "-hostname", SECRET], ["-etcd.user", "root", "-hostname", SECRET]),
        (["-etcd.password"], ["-etcd.password"]),
    ],
)
def test_mask_secrets(argv: list, masked: list) -> None:
    assert mask_secrets(argv) == masked


CREDENTIALS = ("etcd_user", "etcd_password", "etcd_cacert", "etcd_cert", "etcd_key")


def test_each_worker_gets_only_its_fields_and_credentials_only_etcd_workers() -> None:
    config, _ = parse_args(
        [
            "-etcd.user=networkd",
            "-etcd.password=" + SECRET,
            "-etcd.cacert=/etc/networkd/ca.pem",
            "-etcd.cert=/etc/networkd/cert.pem",
            "-etcd.key=/etc/networkd/key.pem",
            "-config=/dev/null",
            "-api.addr=127.0.0.1:3999",
            "-resolv.conf=/tmp/resolv.conf",
            "-dns.ttl=30",
            "-log.file=/var/log/networkd/networkd.log",
            "-vip.ttl=4",
        ]
    )
    assert config is not None
    for spec in all_specs(2):
        mine = worker_config(config, spec)
        holds_credentials = {f for f in CREDENTIALS if getattr(mine, f) != getattr(Config(), f)}
        if spec.name in ("watcher", "elector"):
            assert holds_credentials == set(CREDENTIALS), spec.name
        else:
            assert not holds_credentials, spec.name
            assert SECRET not in repr(mine), spec.name
        assert mine.config_file == "", "the -config file is the supervisor's alone"
        assert mine.log_file == config.log_file and mine.run_dir == config.run_dir
        for field in spec.config_fields:
            assert getattr(mine, field) == getattr(config, field), (spec.name, field)
    by_name = {s.name: worker_config(config, s) for s in all_specs(1)}
    assert by_name["dns.0"].dns_ttl == 30 and by_name["api"].dns_ttl == Config().dns_ttl
    assert (
        by_name["api"].api_addr == "127.0.0.1:3999"
        and by_name["dns.0"].api_addr != "127.0.0.1:3999"
    )
    assert by_name["resolvconf"].resolv_conf == "/tmp/resolv.conf"
    assert by_name["elector"].vip_ttl == 4 and by_name["dns.0"].vip_ttl == Config().vip_ttl


def test_user_fallback_flag() -> None:
    config, _ = parse_args(["-user.fallback=nobody"])
    assert config is not None and config.user_fallback == "nobody"
    assert Config().user_fallback == ""
