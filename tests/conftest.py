"""Fixtures shared by every suite. Real parts: etcd is the real binary."""

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.etcd import EtcdServer


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    # Every test runs in CI, as root: the integration and lab suites need it for netns,
    # iptables and privilege drops. The unit suite (pure logic) runs as any user.
    if os.geteuid() == 0:
        return
    privileged = [item for item in items if not _is_unit(item)]
    if privileged:
        raise pytest.UsageError(
            f"{len(privileged)} tests outside tests/unit need root (CI is root), e.g."
            f" {privileged[0].nodeid}; as another user run `make unit`"
        )


def _is_unit(item: pytest.Item) -> bool:
    parts = Path(str(item.fspath)).parts
    return len(parts) >= 2 and parts[-2] == "unit" and "tests" in parts


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    try:
        yield server
    finally:
        server.close()
