"""The POSIX ACL that lets two groups connect to a root bus endpoint, byte by byte."""

import struct

from networkd.bus.endpoint_access import (
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_OTHER,
    ACL_UNDEFINED_ID,
    ACL_USER_OBJ,
    acl_xattr,
)


def entries(blob: bytes) -> list:
    (version,) = struct.unpack_from("<I", blob)
    assert version == 2 and (len(blob) - 4) % 8 == 0
    return [struct.unpack_from("<HHI", blob, 4 + 8 * i) for i in range((len(blob) - 4) // 8)]


def test_acl_names_each_extra_group_sorted_with_a_mask() -> None:
    got = entries(acl_xattr(6, 6, [995, 994, 995], 0))
    assert got == [
        (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
        (ACL_GROUP_OBJ, 6, ACL_UNDEFINED_ID),
        (ACL_GROUP, 6, 994),  # the kernel rejects unsorted or duplicate entries
        (ACL_GROUP, 6, 995),
        (ACL_MASK, 6, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    ]
