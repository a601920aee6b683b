"""Flags and worker specs of container networks (-libnetwork)."""

import pytest

from networkd.config import ConfigError, parse_args
from networkd.users import Account, UserError, resolve_accounts
from networkd.workers import ETCD_FIELDS, all_specs


def test_libnetwork_adds_three_workers_with_least_rights() -> None:
    plain = [s.name for s in all_specs(1)]
    assert not {"netplugin", "netstore", "netlinks"} & set(plain)
    specs = {s.name: s for s in all_specs(1, libnetwork=True)}
    assert list(specs)[len(plain) :] == ["netlinks", "netstore", "netplugin"]
    assert specs["netplugin"].user == "plugin" and specs["netlinks"].user == "root"
    assert specs["netstore"].user == "user"
    # Only the netstore gets etcd credentials; the plugin worker gets neither them nor root.
    assert set(ETCD_FIELDS) <= set(specs["netstore"].config_fields)
    for name in ("netplugin", "netlinks"):
        assert not set(ETCD_FIELDS) & set(specs[name].config_fields), name


def test_flags() -> None:
    config, _ = parse_args(["-libnetwork", "-docker.plugin.socket", "/run/x/nd.sock",
                            "-netplugin.ttl", "3", "-netplugin.grace=20"])  # fmt: skip
    assert config is not None and config.libnetwork
    assert config.docker_plugin_socket == "/run/x/nd.sock"
    assert (config.netplugin_ttl, config.netplugin_grace, config.netplugin_user) == (
        3.0,
        20.0,
        "networkd-plugin",
    )


def test_the_plugin_account_is_one_of_its_own() -> None:
    table = {"networkd": (990, 990), "networkd-dns": (991, 991), "networkd-plugin": (993, 993)}
    names = {"user": "networkd", "dns": "networkd-dns", "plugin": "networkd-plugin"}
    accounts = resolve_accounts(names, "", table.__getitem__)
    assert accounts["plugin"] == Account("networkd-plugin", 993, 993)
    for shared in ((990, 993), (993, 991)):  # the workers' uid, or the DNS group
        table["networkd-plugin"] = shared
        with pytest.raises(UserError, match=r"-netplugin\.user 'networkd-plugin'"):
            resolve_accounts(names, "", table.__getitem__)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["-libnetwork", "-netplugin.user", "networkd"], "-netplugin.user"),
        (["-libnetwork", "-netplugin.user", "networkd-dns"], "-netplugin.user"),
        (["-netplugin.ttl", "0.5"], "-netplugin.ttl"),
        (["-netplugin.grace", "0"], "-netplugin.grace"),
        (["-docker.plugin.socket", "networkd.sock"], "-docker.plugin.socket"),
    ],
)
def test_bad_values_name_the_flag(argv: list, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        parse_args(argv)
