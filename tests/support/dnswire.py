"""DNS bytes for tests: a plain A query without dnspython (load generators), and cache
fills of whole upstream answers built with dnspython."""

import struct

from networkd.dns import wire
from networkd.dns.fill import Fill, fill_from_answer


def fill_of(data: bytes, now: float) -> Fill:
    """``fill_from_answer`` with the question length read from the answer itself."""
    try:
        question_len = wire.read_name(data, 12) + 4 - 12 if len(data) > 12 else 0
    except wire.FormatError:
        question_len = 0
    return fill_from_answer(data, question_len, now)


def a_query(qid: int, name: str) -> bytes:
    """An A query for ``name`` with ID ``qid`` (RD set), built by hand: cheap enough for
    load generators sending thousands a second."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack("!HH", 1, 1)
