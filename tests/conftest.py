"""Fixtures shared by every suite. Real parts: etcd is the real binary."""

import os
from typing import Iterator

import pytest

from tests.support.etcd import EtcdServer


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    # Every test runs in CI: the suite needs root for netns, iptables and privilege drops.
    if os.geteuid() != 0:
        raise pytest.UsageError("the networkd test suite runs as root (CI is root)")


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    try:
        yield server
    finally:
        server.close()
