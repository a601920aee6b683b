"""Connecting to etcd from inside the elector (after fork).

Uses the shared ``networkd.etcd.client.EtcdConnector`` for TLS and credentials. The
elector needs a client even while etcd is down (it keeps retrying through the gRPC
channel, which reconnects on its own), so the client is not probed here; each caller
(lease keeper, key mirror, controller) gets its own channel with its own timeout.
"""

import logging
from typing import Any

from networkd.config import Config

log = logging.getLogger("networkd.elector")


def connect(config: Config, timeout: float) -> Any:
    """An unchecked ``etcd3`` client for the first endpoint that answers (else the first).

    The probe is bounded by ``timeout``; with one endpoint no probe is made. With
    ``-etcd.user`` the client authenticates when it is made, which needs etcd: then this
    waits for etcd (backoff, logged once) until the worker is asked to stop, instead of
    failing the worker's start again and again until the supervisor gives up on it.
    """
    from networkd.etcd.client import Backoff, EtcdConnectError, EtcdConnector, describe_error
    from networkd.workers.base import STOP_EVENT

    connector = EtcdConnector(config, timeout=timeout, connect_timeout=timeout)
    backoff = Backoff()
    waited = False
    while True:
        try:
            if len(connector.endpoints) > 1:
                try:
                    return connector.connect()
                except EtcdConnectError:
                    pass
            client = connector.client_for(connector.endpoints[0])
            if waited:
                log.info("etcd authenticated after waiting user=%s", config.etcd_user)
            return client
        except Exception as exc:
            if not config.etcd_user or STOP_EVENT.is_set():
                raise
            if not waited:
                log.warning("etcd authentication waits for etcd user=%s reason=%s",
                            config.etcd_user, describe_error(exc))  # fmt: skip
                waited = True
            if STOP_EVENT.wait(backoff.next()):
                raise
