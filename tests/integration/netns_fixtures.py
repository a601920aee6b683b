"""A throwaway namespace with an agent running Python inside it (for adapter tests)."""

import uuid
from typing import Iterator, Tuple

import pytest

from tests.lab.agent import NsAgent
from tests.lab.netns import add_netns, del_netns, ip, ns_exec


def netns_with_eth0(prefix: str, address: str) -> str:
    """A new namespace with an ``eth0`` (a veth whose peer stays inside) holding ``address``."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    add_netns(name)
    ip("link", "add", "eth0", "type", "veth", "peer", "name", "peer0", netns=name)
    ip("addr", "add", address, "dev", "eth0", netns=name)
    ip("link", "set", "eth0", "up", netns=name)
    ip("link", "set", "peer0", "up", netns=name)
    return name


@pytest.fixture
def nsagent() -> Iterator[Tuple[str, NsAgent]]:
    name = netns_with_eth0("nwt", "10.77.5.1/24")
    agent = NsAgent(name)
    try:
        yield name, agent
    finally:
        agent.close()
        ns_exec(name, "true", check=False)
        del_netns(name)
