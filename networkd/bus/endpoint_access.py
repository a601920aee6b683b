"""Who may connect to a bus endpoint: root and the groups that must subscribe, nobody else.

Connecting to a unix socket needs write permission on its file, so the file's mode is the
access rule. A root publisher (supervisor, applier, resolvconf) binds its socket while
only root may connect (umask 0177), then opens it to the subscribing groups:

- no group (none of the subscribing workers runs, e.g. ``-workers applier``): mode 0600;
- one group: ``root:<group>`` mode 0660;
- more groups (the resolv.conf keeper is read by the api, group of ``-user``, and the DNS
  replicas, group of ``-dns.user``): the first as the file's group, the others as named
  entries of a POSIX access ACL, written as the ``system.posix_acl_access`` extended
  attribute (the kernel's binary form, built by ``acl_xattr``; no setfacl process).

A filesystem without POSIX ACLs (tmpfs built without them) cannot express two groups: the
endpoint then stays open to every local user (mode 0666, as unprivileged publishers are)
and a warning names the path, because locking out the DNS replicas would stop DNS
forwarding. Impersonation is prevented either way by the endpoint's directory, which only
the publisher's uid may write.
"""

import errno
import logging
import os
import struct
from typing import Sequence

log = logging.getLogger("networkd.bus")

XATTR_ACL_ACCESS = "system.posix_acl_access"
ACL_EA_VERSION = 2
ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 0x01, 0x04, 0x08, 0x10, 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF
RW = 6


def acl_xattr(owner_perm: int, group_perm: int, groups: Sequence[int], other_perm: int) -> bytes:
    """The ``system.posix_acl_access`` value: owner, owning group, named groups (sorted by
    id, as the kernel requires), mask, other; each named group gets read+write."""
    entries = [
        (ACL_USER_OBJ, owner_perm, ACL_UNDEFINED_ID),
        (ACL_GROUP_OBJ, group_perm, ACL_UNDEFINED_ID),
    ]
    entries += [(ACL_GROUP, RW, gid) for gid in sorted(set(groups))]
    entries += [(ACL_MASK, RW, ACL_UNDEFINED_ID), (ACL_OTHER, other_perm, ACL_UNDEFINED_ID)]
    return struct.pack("<I", ACL_EA_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries
    )


def restrict(path: str, groups: Sequence[int]) -> None:
    """Let root and ``groups`` connect to the socket at ``path`` (see the module doc)."""
    if not groups:  # none of the subscribing kinds runs: root alone
        os.chmod(path, 0o600)
        return
    first, rest = groups[0], [g for g in groups[1:] if g != groups[0]]
    os.chown(path, 0, first)
    os.chmod(path, 0o660)
    if not rest:
        return
    try:
        os.setxattr(path, XATTR_ACL_ACCESS, acl_xattr(RW, RW, rest, 0))
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        os.chmod(path, 0o666)
        log.warning(
            "bus endpoint open to all path=%s reason=no POSIX ACLs on this filesystem groups=%s",
            path,
            ",".join(str(g) for g in groups),
        )
