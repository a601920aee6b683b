"""Pure address plans: adopt what is right, remove only known VIPs, never the primary."""

import pytest

from networkd.net.addresses import host_prefix, normalize_ip, plan_addresses


def test_adopts_present_adds_missing():
    plan = plan_addresses(desired=["10.0.0.1", "10.0.0.2"], actual=["10.0.0.1"], removable=[])
    assert plan.keep == ("10.0.0.1",)
    assert plan.add == ("10.0.0.2",)
    assert plan.remove == ()


def test_removes_only_removable_undesired():
    plan = plan_addresses(desired=[], actual=["10.0.0.1", "192.168.9.9"], removable=["10.0.0.1"])
    assert plan.remove == ("10.0.0.1",)  # 192.168.9.9/32 is not known as a VIP: untouched


def test_never_removes_protected():
    plan = plan_addresses(
        desired=[], actual=["10.77.0.11"], removable=["10.77.0.11"], protected=["10.77.0.11"]
    )
    assert plan.empty


def test_exact_addresses_no_substring_confusion():
    plan = plan_addresses(
        desired=["10.0.0.1"], actual=["110.0.0.1", "10.0.0.1"], removable=["110.0.0.1"]
    )
    assert plan.keep == ("10.0.0.1",)
    assert plan.remove == ("110.0.0.1",)


def test_ipv6_normalized():
    plan = plan_addresses(desired=["FD00:0::1"], actual=["fd00::1"], removable=[])
    assert plan.keep == ("fd00::1",) and plan.empty
    assert host_prefix("fd00::1") == 128 and host_prefix("10.0.0.1") == 32


def test_bad_ip_named():
    with pytest.raises(ValueError, match=r"10\.0\.0\.300"):
        normalize_ip("10.0.0.300")
