"""Address planning for container networks: pure functions, no etcd, no netlink.

A network's pool (its subnet) is cut into blocks of ``block_prefix`` bits. A host hands
out addresses only from blocks it owns (claimed in etcd with a create-if-absent
transaction); when its blocks are full it claims the lowest free block. In ``routed`` mode
the blocks are what other hosts route to this host, so a host never hands out an address
of another host's block. In the L2 modes (macvlan, ipvlan l2) a host whose blocks are full
and that finds no free block borrows a free address of another host's block: every host
is on the same segment, nothing routes by block there.

Within a block the next address after the last one handed out is taken (wrapping), as
Docker's own IPAM does, so a released address is not reused at once while peers may still
hold its old MAC in their ARP caches. The pool's network and broadcast addresses are
never handed out (containers see the pool's mask); the gateway is an allocation like any
other, made once per network.
"""

import ipaddress
from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional, Set, Union

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address

DEFAULT_BLOCK_PREFIX = 26
MAX_BLOCK_PREFIX = 32


class IpamError(ValueError):
    """An allocation that cannot be made; the message says why (Docker shows it)."""


def parse_pool(text: str) -> IPv4Network:
    """An IPv4 subnet in CIDR form (host bits zero); raises IpamError."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise IpamError(f"not a subnet: {text!r} ({exc})") from None
    if not isinstance(net, IPv4Network):
        raise IpamError(f"IPv6 pools are not supported: {text}")
    return net


def default_block_prefix(pool: IPv4Network) -> int:
    """/26 blocks (64 addresses) in pools larger than that; a small pool is one block."""
    return max(pool.prefixlen, DEFAULT_BLOCK_PREFIX)


def check_block_prefix(pool: IPv4Network, prefix: int) -> int:
    if not pool.prefixlen <= prefix <= MAX_BLOCK_PREFIX:
        raise IpamError(
            f"block size /{prefix} does not fit pool {pool} (expected /{pool.prefixlen}../32)"
        )
    return prefix


def reserved(pool: IPv4Network) -> Set[IPv4Address]:
    """Addresses never handed out: the pool's network and broadcast addresses."""
    if pool.prefixlen >= 31:
        return set()
    return {pool.network_address, pool.broadcast_address}


def block_of(pool: IPv4Network, prefix: int, ip: IPv4Address) -> IPv4Network:
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)  # type: ignore[return-value]


def iter_blocks(pool: IPv4Network, prefix: int) -> Iterator[IPv4Network]:
    return pool.subnets(new_prefix=prefix)


def overlapping(pool: IPv4Network, others: Mapping[str, IPv4Network]) -> Optional[str]:
    """The name of the first other pool that overlaps ``pool`` (equal pools do not count)."""
    for name, other in sorted(others.items()):
        if other != pool and other.overlaps(pool):
            return name
    return None


def free_in_block(
    block: IPv4Network,
    taken: Set[IPv4Address],
    skip: Set[IPv4Address],
    after: Optional[IPv4Address] = None,
) -> Optional[IPv4Address]:
    """The first free address of ``block`` after ``after`` (wrapping), or None."""
    first = int(block.network_address)
    size = block.num_addresses
    start = 0
    if after is not None and after in block:
        start = int(after) - first + 1
    for i in range(size):
        ip = IPv4Address(first + (start + i) % size)
        if ip not in taken and ip not in skip:
            return ip
    return None


@dataclass(frozen=True)
class Allocate:
    """Create the address key for ``ip`` (it lies in ``block``)."""

    ip: IPv4Address
    block: IPv4Network


@dataclass(frozen=True)
class ClaimBlock:
    """Claim ``block`` for this host first, then plan again."""

    block: IPv4Network


AddressStep = Union[Allocate, ClaimBlock]


def plan_address(
    pool: IPv4Network,
    block_prefix: int,
    blocks: Mapping[IPv4Network, str],
    taken: Set[IPv4Address],
    host: str,
    borrow: bool,
    cursors: Optional[Dict[IPv4Network, IPv4Address]] = None,
) -> "AddressStep":
    """The next step to get any free address for ``host``; raises IpamError when exhausted.

    ``blocks`` maps every claimed block to its owner; ``taken`` holds every allocated
    address of the pool; ``cursors`` the last address handed out per block.
    """
    cursors = cursors or {}
    skip = reserved(pool)
    mine = sorted((b for b, owner in blocks.items() if owner == host), key=_block_order)
    for block in mine:
        ip = free_in_block(block, taken, skip, cursors.get(block))
        if ip is not None:
            return Allocate(ip, block)
    for block in iter_blocks(pool, block_prefix):
        if block not in blocks and free_in_block(block, taken, skip) is not None:
            return ClaimBlock(block)
    if borrow:
        others = sorted((b for b, owner in blocks.items() if owner != host), key=_block_order)
        for block in others:
            ip = free_in_block(block, taken, skip, cursors.get(block))
            if ip is not None:
                return Allocate(ip, block)
    held = f"{len(mine)} block(s) of /{block_prefix} here"
    raise IpamError(
        f"pool {pool} exhausted: no free address in this host's blocks ({held}) and no free block"
        + ("" if borrow else " (routed mode: a host hands out only addresses of its own blocks)")
    )


def plan_specific(
    pool: IPv4Network,
    block_prefix: int,
    blocks: Mapping[IPv4Network, str],
    taken: Set[IPv4Address],
    host: str,
    ip: IPv4Address,
    borrow: bool,
) -> "AddressStep":
    """The next step to get exactly ``ip`` for ``host``; raises IpamError when it cannot be."""
    if ip not in pool:
        raise IpamError(f"address {ip} is not in pool {pool}")
    if ip in reserved(pool):
        raise IpamError(f"address {ip} is the network or broadcast address of pool {pool}")
    if ip in taken:
        raise IpamError(f"address {ip} is already in use in pool {pool}")
    block = block_of(pool, block_prefix, ip)
    owner = blocks.get(block)
    if owner is None:
        return ClaimBlock(block)
    if owner != host and not borrow:
        raise IpamError(
            f"address {ip} lies in block {block} of host {owner} "
            "(routed mode: a host hands out only addresses of its own blocks)"
        )
    return Allocate(ip, block)


def _block_order(block: IPv4Network) -> int:
    return int(block.network_address)
