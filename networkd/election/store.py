"""Lease-bound keys owned by this node: claim, rebind, release, each one transaction.

A key is *ours* when its value is our hostname and it is bound to our lease. Nothing
here overwrites blindly: a claim is create-if-absent, a rebind (our hostname under a
previous lease of ours, e.g. after the lease was lost and re-granted) compares value and
lease, and a release deletes only if value and lease still match. Leader-job writes are
fenced by the leader key: they succeed only while it is still ours.
"""

import logging
from typing import Any, List, NamedTuple, Optional

from networkd.election.mirror import KeyMirror
from networkd.etcd.channel import ClientHolder

log = logging.getLogger("networkd.elector")


class TxnResult(NamedTuple):
    """Whether the compare held, and the store revision the response was made at."""

    succeeded: bool
    revision: int


def _lease_compare(key: str, lease_id: int) -> Any:
    """A LEASE comparison (etcd >= 3.3); etcd3 0.12 has no helper for it."""
    from etcd3 import etcdrpc, transactions

    class LeaseCompare(transactions.BaseCompare):  # type: ignore[misc]
        def build_compare(self, compare: Any) -> None:
            compare.target = etcdrpc.Compare.LEASE
            compare.lease = int(self.value)

    return LeaseCompare(key) == lease_id


def _header_revision(
    client: Any, compare: List[Any], success: List[Any], failure: List[Any]
) -> TxnResult:
    """Run a transaction through the raw stub so that the header revision is known."""
    from etcd3 import etcdrpc

    request = etcdrpc.TxnRequest(
        compare=[c.build_message() for c in compare],
        success=client._ops_to_requests(success),
        failure=client._ops_to_requests(failure),
    )
    response = client.kvstub.Txn(
        request, client.timeout, credentials=client.call_credentials, metadata=client.metadata
    )
    return TxnResult(bool(response.succeeded), int(response.header.revision))


class OwnedKeys:
    """Transactions on keys bound to this node's lease, echoed into the mirror.

    ``client`` is an etcd3 client or a ``ClientHolder`` (whose current client is used for
    each transaction, so a replaced channel is picked up at once)."""

    def __init__(self, client: Any, hostname: str, mirror: Optional[KeyMirror] = None) -> None:
        self._source = client
        self.hostname = hostname
        self.mirror = mirror

    @property
    def client(self) -> Any:
        source = self._source
        return source.get() if isinstance(source, ClientHolder) else source

    def claim(self, key: str, lease_id: int, value: Optional[str] = None) -> TxnResult:
        """Create ``key`` = hostname (or ``value``) bound to the lease, only if absent."""
        from etcd3 import transactions

        text = self.hostname if value is None else value
        result = _header_revision(
            self.client,
            [transactions.Create(key) == 0],
            [transactions.Put(key, text, lease=lease_id)],
            [],
        )
        if result.succeeded and self.mirror is not None:
            self.mirror.note_put(key, text, lease_id, result.revision)
        return result

    def claim_all(self, keys: List[str], lease_id: int) -> TxnResult:
        """Create every key (= hostname, bound to the lease) in one transaction, only if
        all are absent (a cold start claims hundreds of free locks at once)."""
        from etcd3 import transactions

        result = _header_revision(
            self.client,
            [transactions.Create(key) == 0 for key in keys],
            [transactions.Put(key, self.hostname, lease=lease_id) for key in keys],
            [],
        )
        if result.succeeded and self.mirror is not None:
            for key in keys:
                self.mirror.note_put(key, self.hostname, lease_id, result.revision)
        return result

    def rebind(
        self, key: str, old_lease: int, lease_id: int, value: Optional[str] = None
    ) -> TxnResult:
        """Move our key from a previous lease of ours to the current one, if unchanged."""
        from etcd3 import transactions

        text = self.hostname if value is None else value
        result = _header_revision(
            self.client,
            [transactions.Value(key) == text, _lease_compare(key, old_lease)],
            [transactions.Put(key, text, lease=lease_id)],
            [],
        )
        if result.succeeded and self.mirror is not None:
            self.mirror.note_put(key, text, lease_id, result.revision)
        return result

    def release(self, key: str, lease_id: int, value: Optional[str] = None) -> TxnResult:
        """Delete ``key`` only if it still holds our value under ``lease_id``."""
        from etcd3 import transactions

        text = self.hostname if value is None else value
        result = _header_revision(
            self.client,
            [transactions.Value(key) == text, _lease_compare(key, lease_id)],
            [transactions.Delete(key)],
            [],
        )
        if result.succeeded and self.mirror is not None:
            self.mirror.note_delete(key, result.revision)
        return result

    def fenced_put(self, key: str, value: str, fence_key: str, fence_lease: int) -> TxnResult:
        """Put ``key`` only while ``fence_key`` (the leader key) is ours."""
        from etcd3 import transactions

        return _header_revision(
            self.client,
            [
                transactions.Value(fence_key) == self.hostname,
                _lease_compare(fence_key, fence_lease),
            ],
            [transactions.Put(key, value)],
            [],
        )

    def fenced_delete(self, key: str, expected: str, fence_key: str, fence_lease: int) -> TxnResult:
        """Delete ``key`` if it still holds ``expected`` and ``fence_key`` is ours."""
        from etcd3 import transactions

        return _header_revision(
            self.client,
            [
                transactions.Value(fence_key) == self.hostname,
                _lease_compare(fence_key, fence_lease),
                transactions.Value(key) == expected,
            ],
            [transactions.Delete(key)],
            [],
        )

    def put_own(self, key: str, value: str, lease_id: int) -> TxnResult:
        """Write a key only this node writes (its health report), bound to the lease."""
        from etcd3 import transactions

        result = _header_revision(
            self.client, [], [transactions.Put(key, value, lease=lease_id)], []
        )
        if self.mirror is not None:
            self.mirror.note_put(key, value, lease_id, result.revision)
        return result

    def create(self, key: str, value: str, lease_id: int) -> TxnResult:
        """Create ``key`` = ``value`` bound to the lease, only if absent (a planned move)."""
        from etcd3 import transactions

        result = _header_revision(
            self.client,
            [transactions.Create(key) == 0],
            [transactions.Put(key, value, lease=lease_id)],
            [],
        )
        if result.succeeded and self.mirror is not None:
            self.mirror.note_put(key, value, lease_id, result.revision)
        return result

    def delete_if(self, key: str, expected: str) -> TxnResult:
        """Delete ``key`` only if it still holds ``expected``."""
        from etcd3 import transactions

        result = _header_revision(
            self.client, [transactions.Value(key) == expected], [transactions.Delete(key)], []
        )
        if result.succeeded and self.mirror is not None:
            self.mirror.note_delete(key, result.revision)
        return result

    def put_config(self, key: str, value: str) -> None:
        """An operator's write of a configuration value (``networkdctl vip add``)."""
        self.client.put(key, value)

    def delete_config(self, key: str) -> bool:
        """An operator's delete of a configuration value; False when it was absent."""
        return bool(self.client.delete(key))

    def read(self, key: str) -> Optional[bytes]:
        value, _meta = self.client.get(key)
        return value  # type: ignore[no-any-return]
