"""Connecting to etcd v3: several endpoints, TLS, user/password, failover and backoff.

A small wrapper around ``etcd3.Etcd3Client`` that every etcd user (watcher, elector)
shares::

    connector = EtcdConnector(ctx.config)
    client = connector.connect()       # tries each endpoint in turn, last good one first
    header = probe(client)             # revision and cluster id; raises when unreachable
    ...
    connector.failed(client, exc)       # on an error: the next connect() starts elsewhere

``connect()`` checks each candidate with a short read before returning it, so a dead
first endpoint costs one refused connection (or ``connect_timeout`` when it blackholes).
Create connectors inside the worker process: gRPC channels do not survive a fork.
"""

import logging
import random
import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import grpc

from networkd import keys
from networkd.config import Config

log = logging.getLogger("networkd.etcd")

DEFAULT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
GRPC_OPTIONS: List[Tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    # Reconnect attempts of a channel: quick at first, bounded.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    # An owner coming back from a partition yields once it reaches etcd again: keep that quick.
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A new channel must open a new TCP connection: with the global subchannel pool gRPC may
    # hand a replacement channel the old connection, stuck in retransmissions after a
    # partition (networkd.etcd.channel).
    ("grpc.use_local_subchannel_pool", 1),
]


class EtcdConnectError(ConnectionError):
    """No endpoint answered; the message lists each endpoint's failure."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    scheme: str
    host: str
    port: int

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(url: str) -> Endpoint:
    """``http://host:port`` or ``https://host:port`` (port 2379 when missing)."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"etcd endpoint must start with http:// or https://: {url!r}")
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, ""
    if not host:
        raise ValueError(f"etcd endpoint has no host: {url!r}")
    port = int(port_text) if port_text.isdigit() else 2379
    return Endpoint(url=url.strip(), scheme=scheme, host=host, port=port)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _make_client_class() -> Any:
    import etcd3

    class Client(etcd3.Etcd3Client):  # type: ignore[misc, name-defined]
        """Etcd3Client that also does TLS with the system CAs (no ``ca_cert`` file)."""

        endpoint: Endpoint

        def _get_secure_creds(
            self, ca_cert: Any, cert_key: Any = None, cert_cert: Any = None
        ) -> Any:
            return grpc.ssl_channel_credentials(
                _read(ca_cert) if ca_cert else None,
                _read(cert_key) if cert_key else None,
                _read(cert_cert) if cert_cert else None,
            )

    return Client


_CLIENT_CLASS: Any = None


def client_class() -> Any:
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        _CLIENT_CLASS = _make_client_class()
    return _CLIENT_CLASS


def describe_error(exc: BaseException) -> str:
    """A one-line reason for logs and status: gRPC code and details when there are any."""
    if isinstance(exc, grpc.RpcError):
        code = getattr(exc, "code", lambda: None)()
        details = getattr(exc, "details", lambda: "")() or ""
        name = code.name if code is not None else "RPC_ERROR"
        return f"{name}: {details}".strip().rstrip(":")
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Header:
    revision: int
    cluster_id: int
    member_id: int


def probe(client: Any, timeout: float = CONNECT_TIMEOUT) -> Header:
    """One cheap linearizable read: proves the endpoint serves requests. Raises RpcError."""
    response = client.kvstub.Range(
        _probe_request(), timeout, credentials=client.call_credentials, metadata=client.metadata
    )
    header = response.header
    return Header(int(header.revision), int(header.cluster_id), int(header.member_id))


def probe_future(client: Any, timeout: float) -> Any:
    """``probe``'s read without waiting for it: a gRPC future (``result()``, ``cancel()``,
    ``add_done_callback``)."""
    return client.kvstub.Range.future(
        _probe_request(), timeout, credentials=client.call_credentials, metadata=client.metadata
    )


def _probe_request() -> Any:
    """The probe's read: the leader key, keys only, at most one (cheap, linearizable)."""
    from etcd3.etcdrpc import rpc_pb2

    return rpc_pb2.RangeRequest(key=keys.LEADER.encode(), keys_only=True, limit=1)


class Backoff:
    """Exponential backoff with jitter: 0.2 s, 0.4 s, ... up to ``maximum``."""

    def __init__(
        self, initial: float = 0.2, maximum: float = 2.0, factor: float = 2.0, jitter: float = 0.2
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self._next = self.initial


class EtcdConnector:
    """Builds checked clients from the Config's endpoints, TLS files and credentials."""

    def __init__(
        self,
        config: Config,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        endpoints: Optional[List[str]] = None,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.endpoints = [parse_endpoint(url) for url in (endpoints or config.etcd_endpoints)]
        if not self.endpoints:
            raise ValueError("no etcd endpoint configured")
        self._preferred = 0
        self._lock = threading.Lock()
        self.last_error = ""
        self.current: Optional[Endpoint] = None

    def client_for(self, endpoint: Endpoint) -> Any:
        """An unchecked client for one endpoint (authenticates at once if a user is set)."""
        cfg = self.config
        kwargs: dict = {"timeout": self.timeout, "grpc_options": GRPC_OPTIONS}
        if endpoint.secure:
            # ca_cert "" selects the system roots (see Client._get_secure_creds).
            kwargs["ca_cert"] = cfg.etcd_cacert or ""
            if cfg.etcd_cert or cfg.etcd_key:
                kwargs["cert_cert"] = cfg.etcd_cert or None
                kwargs["cert_key"] = cfg.etcd_key or None
        if cfg.etcd_user:
            kwargs["user"] = cfg.etcd_user
            kwargs["password"] = cfg.etcd_password
        client = client_class()(host=endpoint.host, port=endpoint.port, **kwargs)
        client.endpoint = endpoint
        if not endpoint.secure and client.call_credentials is not None:
            # gRPC refuses call credentials on a plaintext channel; the auth token also
            # travels as metadata, which is all etcd needs.
            client.call_credentials = None
            client.watcher._credentials = None
        return client

    def connect(self) -> Any:
        """A client whose endpoint just answered a read; tries every endpoint once.

        Raises EtcdConnectError when none answers.
        """
        with self._lock:
            start = self._preferred
        failures: List[str] = []
        count = len(self.endpoints)
        for step in range(count):
            index = (start + step) % count
            endpoint = self.endpoints[index]
            client = None
            try:
                client = self.client_for(endpoint)
                probe(client, self.connect_timeout)
            except Exception as exc:
                reason = describe_error(exc)
                failures.append(f"{endpoint.url}: {reason}")
                log.debug("etcd endpoint failed endpoint=%s reason=%s", endpoint.url, reason)
                if client is not None:
                    _close(client)
                continue
            with self._lock:
                self._preferred = index
            self.current = endpoint
            self.last_error = ""
            return client
        self.current = None
        self.last_error = "; ".join(failures)
        raise EtcdConnectError(f"no etcd endpoint answered: {self.last_error}")

    def failed(self, client: Any, exc: Optional[BaseException] = None) -> None:
        """Report a failing client: the next connect() starts with the next endpoint."""
        endpoint = getattr(client, "endpoint", None)
        with self._lock:
            if endpoint in self.endpoints:
                self._preferred = (self.endpoints.index(endpoint) + 1) % len(self.endpoints)
        if exc is not None:
            self.last_error = describe_error(exc)
        _close(client)


def _close(client: Any) -> None:
    try:
        client.close()
    except Exception:  # closing a broken channel must never matter
        pass
