"""Typed requests between the container-network workers (over ``channel``), one class each.

``netplugin -> netstore``: what Docker asked, already validated by ``protocol`` (the only
module that reads Docker's JSON). ``netstore -> netlinks``: the link operations the root
worker performs. Every request is answered with one ``Reply``.

These are not bus messages: they travel on the request channels, which check the peer's
credentials (see ``channel``). ``REQUESTS`` maps a type name to its class for decoding.
"""

from dataclasses import dataclass, field
from typing import Dict

# --- netplugin -> netstore (IPAM) ------------------------------------------------------


@dataclass
class RequestPool:
    """Docker's IpamDriver.RequestPool; ``options`` are ``--ipam-opt`` values."""

    pool: str
    sub_pool: str = ""
    options: Dict[str, str] = field(default_factory=dict)


@dataclass
class ReleasePool:
    pool_id: str


@dataclass
class RequestAddress:
    """``address`` empty: any free address; ``gateway``: the network's gateway."""

    pool_id: str
    address: str = ""
    gateway: bool = False


@dataclass
class ReleaseAddress:
    pool_id: str
    address: str


# --- netplugin -> netstore (network driver) --------------------------------------------


@dataclass
class CreateNetwork:
    docker_id: str
    pool: str
    gateway: str
    mode: str
    parent: str = ""
    ipvlan_mode: str = ""


@dataclass
class DeleteNetwork:
    docker_id: str


@dataclass
class CreateEndpoint:
    """``address`` is Docker's ``ip/prefix`` from our IPAM."""

    docker_id: str
    endpoint_id: str
    address: str


@dataclass
class DeleteEndpoint:
    docker_id: str
    endpoint_id: str


@dataclass
class EndpointInfo:
    docker_id: str
    endpoint_id: str


@dataclass
class Join:
    docker_id: str
    endpoint_id: str


@dataclass
class Leave:
    docker_id: str
    endpoint_id: str


# --- netstore -> netlinks ---------------------------------------------------------------


@dataclass
class CheckParent:
    """Can links of ``mode`` be made on ``parent`` here? (Before a network is created.)"""

    mode: str
    parent: str
    ipvlan_mode: str = ""


@dataclass
class CreateLink:
    """Make the endpoint's link (idempotent) and, in routed mode, its /32 host route."""

    endpoint_id: str
    mode: str
    address: str
    parent: str = ""
    ipvlan_mode: str = ""


@dataclass
class DeleteLink:
    endpoint_id: str


# --- every answer ------------------------------------------------------------------------


@dataclass
class Reply:
    """``error`` non-empty: the operation was not done (Docker shows the text)."""

    error: str = ""
    pool_id: str = ""
    pool: str = ""
    address: str = ""
    ifname: str = ""
    gateway: str = ""
    gateway_on_link: bool = False  # reach the gateway through a connected /32 route
    info: Dict[str, str] = field(default_factory=dict)


STORE_REQUESTS = (
    RequestPool,
    ReleasePool,
    RequestAddress,
    ReleaseAddress,
    CreateNetwork,
    DeleteNetwork,
    CreateEndpoint,
    DeleteEndpoint,
    EndpointInfo,
    Join,
    Leave,
)
LINK_REQUESTS = (CheckParent, CreateLink, DeleteLink)
REQUESTS: Dict[str, type] = {cls.__name__: cls for cls in STORE_REQUESTS + LINK_REQUESTS + (Reply,)}
