"""This node's identity: hostname and address, resolved once at start (and on HUP)."""

import logging
import socket

from networkd.config import Config
from networkd.workers.base import NodeIdentity

log = logging.getLogger("networkd.supervisor")


def first_ipv4(interface: str) -> str:
    """The first IPv4 address of ``interface``, or "" when it has none or does not exist."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=interface)
        if not links:
            return ""
        for msg in ipr.get_addr(family=socket.AF_INET, index=links[0]):
            address = msg.get_attr("IFA_ADDRESS")
            if address:
                return str(address)
    return ""


def resolve(config: Config) -> NodeIdentity:
    hostname = config.hostname or socket.gethostname()
    address = config.net_address
    if not address:
        try:
            address = first_ipv4(config.net_interface)
        except OSError as exc:
            log.warning("node address unknown interface=%s reason=%s", config.net_interface, exc)
        if not address:
            log.warning(
                "node address unknown interface=%s reason=no IPv4 address", config.net_interface
            )
    return NodeIdentity(hostname=hostname, address=address)
