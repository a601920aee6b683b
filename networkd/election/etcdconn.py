"""Connecting to etcd from inside the elector (after fork).

Uses the shared ``networkd.etcd.client.EtcdConnector`` for TLS and credentials. The
elector needs a client even while etcd is down (it keeps retrying through the gRPC
channel, which reconnects on its own), so the client is not probed here; each caller
(lease keeper, key mirror, controller) gets its own channel with its own timeout.
"""

from typing import Any

from networkd.config import Config


def connect(config: Config, timeout: float) -> Any:
    """An unchecked ``etcd3`` client for the first endpoint that answers (else the first).

    The probe is bounded by ``timeout``; with one endpoint no probe is made.
    """
    from networkd.etcd.client import EtcdConnectError, EtcdConnector

    connector = EtcdConnector(config, timeout=timeout, connect_timeout=timeout)
    if len(connector.endpoints) > 1:
        try:
            return connector.connect()
        except EtcdConnectError:
            pass
    return connector.client_for(connector.endpoints[0])
