"""Address planning of container networks: blocks, cursors, borrowing, exhaustion."""

from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N
from typing import Dict, Optional, Set

import pytest

from networkd.netdriver import ipam
from networkd.netdriver.ipam import Allocate, ClaimBlock, IpamError

POOL = N("10.50.0.0/16")


def plan(
    blocks: Dict[str, str],
    taken: Set[str] = frozenset(),  # type: ignore[assignment]
    host: str = "a",
    borrow: bool = False,
    pool: N = POOL,
    prefix: int = 26,
    cursors: Optional[Dict[str, str]] = None,
) -> object:
    return ipam.plan_address(
        pool,
        prefix,
        {N(b): h for b, h in blocks.items()},
        {A(t) for t in taken},
        host,
        borrow,
        {N(b): A(ip) for b, ip in (cursors or {}).items()},
    )


@pytest.mark.parametrize(
    "blocks, taken, host, borrow, cursors, expected",
    [
        # no block yet: claim the lowest
        ({}, set(), "a", False, None, ClaimBlock(N("10.50.0.0/26"))),
        # own block: the pool's network address and the taken gateway are skipped
        ({"10.50.0.0/26": "a"}, {"10.50.0.1"}, "a", False, None,
         Allocate(A("10.50.0.2"), N("10.50.0.0/26"))),
        # the block of another host is not ours: claim the next free one
        ({"10.50.0.0/26": "b"}, set(), "a", False, None, ClaimBlock(N("10.50.0.64/26"))),
        # after the last one handed out, not the lowest free (no immediate reuse)
        ({"10.50.0.0/26": "a"}, {"10.50.0.1", "10.50.0.5"}, "a", False, {"10.50.0.0/26": "10.50.0.5"},
         Allocate(A("10.50.0.6"), N("10.50.0.0/26"))),
        # the cursor wraps round the block
        ({"10.50.0.0/26": "a"}, {"10.50.0.1", "10.50.0.63"}, "a", False,
         {"10.50.0.0/26": "10.50.0.63"}, Allocate(A("10.50.0.2"), N("10.50.0.0/26"))),
        # our only block is full: claim the next free one
        ({"10.50.0.0/26": "a"}, {f"10.50.0.{i}" for i in range(64)}, "a", False, None,
         ClaimBlock(N("10.50.0.64/26"))),
        # the lowest block of ours is tried first
        ({"10.50.0.64/26": "a", "10.50.0.0/26": "a"},
         {f"10.50.0.{i}" for i in range(64, 128)}, "a", False, None,
         Allocate(A("10.50.0.1"), N("10.50.0.0/26"))),
    ],
)  # fmt: skip
def test_plan_address(
    blocks: Dict[str, str],
    taken: Set[str],
    host: str,
    borrow: bool,
    cursors: Optional[Dict[str, str]],
    expected: object,
) -> None:
    assert plan(blocks, taken, host, borrow, cursors=cursors) == expected


def test_a_tiny_pool_is_one_block_and_runs_out() -> None:
    pool = N("10.59.0.0/30")
    assert ipam.default_block_prefix(pool) == 30
    assert plan({}, pool=pool, prefix=30) == ClaimBlock(pool)
    first = plan({"10.59.0.0/30": "a"}, {"10.59.0.1"}, pool=pool, prefix=30)
    assert first == Allocate(A("10.59.0.2"), pool)
    with pytest.raises(IpamError, match=r"pool 10.59.0.0/30 exhausted.*routed mode"):
        plan({"10.59.0.0/30": "a"}, {"10.59.0.1", "10.59.0.2"}, pool=pool, prefix=30)


def test_routed_never_borrows_l2_does() -> None:
    pool = N("10.60.0.0/28")
    blocks = {"10.60.0.0/29": "b", "10.60.0.8/29": "b"}
    taken = {"10.60.0.1", "10.60.0.2"}
    with pytest.raises(IpamError, match="exhausted"):
        plan(blocks, taken, host="a", borrow=False, pool=pool, prefix=29)
    assert plan(blocks, taken, host="a", borrow=True, pool=pool, prefix=29) == Allocate(
        A("10.60.0.3"), N("10.60.0.0/29")
    )


@pytest.mark.parametrize(
    "ip, blocks, taken, borrow, expected",
    [
        ("10.50.0.9", {}, set(), False, ClaimBlock(N("10.50.0.0/26"))),
        ("10.50.0.9", {"10.50.0.0/26": "a"}, set(), False, Allocate(A("10.50.0.9"), N("10.50.0.0/26"))),
        ("10.50.0.9", {"10.50.0.0/26": "b"}, set(), True, Allocate(A("10.50.0.9"), N("10.50.0.0/26"))),
        ("10.50.0.9", {"10.50.0.0/26": "b"}, set(), False, "block 10.50.0.0/26 of host b"),
        ("10.50.0.9", {"10.50.0.0/26": "a"}, {"10.50.0.9"}, False, "already in use"),
        ("10.50.0.0", {}, set(), False, "network or broadcast"),
        ("10.50.255.255", {}, set(), False, "network or broadcast"),
        ("10.51.0.9", {}, set(), False, "not in pool"),
    ],
)  # fmt: skip
def test_plan_specific(
    ip: str, blocks: Dict[str, str], taken: Set[str], borrow: bool, expected: object
) -> None:
    def run() -> object:
        return ipam.plan_specific(
            POOL,
            26,
            {N(b): h for b, h in blocks.items()},
            {A(t) for t in taken},
            "a",
            A(ip),
            borrow,
        )

    if isinstance(expected, str):
        with pytest.raises(IpamError, match=expected):
            run()
    else:
        assert run() == expected


def test_pools_blocks_and_overlaps() -> None:
    assert ipam.default_block_prefix(N("10.0.0.0/8")) == 26
    assert ipam.check_block_prefix(POOL, 24) == 24
    with pytest.raises(IpamError, match="does not fit"):
        ipam.check_block_prefix(POOL, 12)
    with pytest.raises(IpamError, match="IPv6"):
        ipam.parse_pool("fd00::/64")
    with pytest.raises(IpamError, match="not a subnet"):
        ipam.parse_pool("10.50.0.1/16")
    others = {"10.50.0.0-16": POOL, "10.60.0.0-24": N("10.60.0.0/24")}
    assert ipam.overlapping(N("10.50.128.0/17"), others) == "10.50.0.0-16"
    assert ipam.overlapping(N("10.0.0.0/8"), others) == "10.50.0.0-16"
    assert ipam.overlapping(POOL, others) is None  # the same network on another host
    assert ipam.overlapping(N("10.61.0.0/16"), others) is None
    assert ipam.reserved(N("10.0.0.0/31")) == set()
