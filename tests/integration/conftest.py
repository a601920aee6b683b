"""Fixtures of the integration suites."""

from typing import Any, Iterator

import pytest

from tests.integration.elector_cluster import Cluster
from tests.support.etcd import EtcdServer


@pytest.fixture
def cluster(etcd: EtcdServer, tmp_path: Any) -> Iterator[Cluster]:
    """Three `networkd -workers watcher,elector` nodes against one real etcd."""
    c = Cluster(etcd, str(tmp_path))
    try:
        yield c
    finally:
        c.close()
