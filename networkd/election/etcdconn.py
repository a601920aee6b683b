"""Connecting to etcd from inside a worker (after fork): endpoints, TLS, auth, gRPC options.

Uses ``networkd.etcd.client.connect`` when the watcher's connector is present, else a
local equivalent. gRPC options keep reconnects quick (etcd back in about a second) and
let a dead TCP connection be noticed (keepalive pings, no more often than etcd allows).
"""

import logging
from typing import Any, List, Tuple

from networkd.config import Config

log = logging.getLogger("networkd.elector")

GRPC_OPTIONS: List[Tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def endpoint_host_port(endpoint: str) -> Tuple[str, int]:
    """``http://host:port`` -> (host, port); IPv6 hosts in brackets."""
    rest = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def connect(config: Config, timeout: float, endpoint_index: int = 0) -> Any:
    """An ``etcd3`` client for one of the configured endpoints (round robin by index)."""
    import etcd3

    endpoints = config.etcd_endpoints
    endpoint = endpoints[endpoint_index % len(endpoints)]
    host, port = endpoint_host_port(endpoint)
    kwargs = {}
    if endpoint.startswith("https://") or config.etcd_cacert:
        kwargs["ca_cert"] = config.etcd_cacert or None
        if config.etcd_cert and config.etcd_key:
            kwargs["cert_cert"] = config.etcd_cert
            kwargs["cert_key"] = config.etcd_key
    if config.etcd_user:
        kwargs["user"] = config.etcd_user
        kwargs["password"] = config.etcd_password
    return etcd3.client(host=host, port=port, timeout=timeout, grpc_options=GRPC_OPTIONS, **kwargs)
