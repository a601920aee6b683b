"""DNS wire format: a minimal, strict parser for queries and upstream responses.

Nothing here trusts the bytes. ``parse_query`` returns a ``Query`` or raises
``FormatError`` (answer FORMERR) or ``Ignore`` (stay silent); ``scan_response`` walks an
upstream answer to find its TTL fields. Names are kept in wire form; their lower-cased
wire form (``bytes.lower()`` only touches ASCII letters, never label lengths, which are at
most 63) is the key of every table.
"""

import socket
import struct
from typing import List, NamedTuple, Optional, Tuple

HEADER = struct.Struct(">HHHHHH")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
RR_FIXED = struct.Struct(">HHIH")  # type, class, ttl, rdlength

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_AD = 0x0020
FLAG_CD = 0x0010
OPCODE_MASK = 0x7800
EDNS_DO = 0x8000

MAX_NAME = 255
CLASSIC_UDP_SIZE = 512
OUR_UDP_SIZE = 1232  # advertised in our OPT records (DNS flag day 2020)
MAX_UDP_SIZE = 4096  # the most we send over UDP, whatever a client advertises


class FormatError(ValueError):
    """Malformed message: the reason says what; answer FORMERR when a header exists."""


class Ignore(ValueError):
    """A message we must not answer (too short for a header, or a response)."""


class Edns(NamedTuple):
    """The client's OPT record: UDP payload size, version, flags and the raw RR bytes."""

    udp_size: int
    version: int
    flags: int
    raw: bytes


class Query(NamedTuple):
    """A parsed query. ``question`` is the question section as asked (name case kept)."""

    id: int
    flags: int
    qname: bytes  # wire form, case as asked
    lname: bytes  # wire form, lower-cased: the lookup key
    qtype: int
    qclass: int
    question: bytes  # qname + qtype + qclass, as asked
    edns: Optional[Edns]

    @property
    def max_udp(self) -> int:
        if self.edns is None:
            return CLASSIC_UDP_SIZE
        return min(max(self.edns.udp_size, CLASSIC_UDP_SIZE), MAX_UDP_SIZE)


def read_name(data: bytes, offset: int) -> int:
    """End offset of an uncompressed name at ``offset``; FormatError when invalid."""
    end = len(data)
    pos = offset
    while True:
        if pos >= end:
            raise FormatError("name runs past the end")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            raise FormatError("compressed or bad label in question")
        pos += 1 + length
        if pos - offset > MAX_NAME:
            raise FormatError("name longer than 255 bytes")
    if pos - offset > MAX_NAME:
        raise FormatError("name longer than 255 bytes")
    return pos


def skip_name(data: bytes, offset: int) -> int:
    """End offset of a possibly compressed name (the pointer target is not followed)."""
    end = len(data)
    pos = offset
    while True:
        if pos >= end:
            raise FormatError("name runs past the end")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise FormatError("pointer runs past the end")
            return pos + 2
        if length > 63:
            raise FormatError("bad label type")
        pos += 1 + length
        if pos - offset > MAX_NAME:
            raise FormatError("name longer than 255 bytes")


def parse_query(data: bytes) -> Query:
    """Parse a query. Raises Ignore (no answer) or FormatError (answer FORMERR)."""
    if len(data) < 12:
        raise Ignore("shorter than a header")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & FLAG_QR:
        raise Ignore("a response, not a query")
    if qdcount != 1:
        raise FormatError(f"qdcount={qdcount}")
    if ancount or nscount:
        raise FormatError("answer or authority records in a query")
    qend = read_name(data, 12)
    if qend + 4 > len(data):
        raise FormatError("question runs past the end")
    qtype, qclass = struct.unpack_from(">HH", data, qend)
    qname = data[12:qend]
    question = data[12 : qend + 4]
    pos = qend + 4
    edns: Optional[Edns] = None
    for _ in range(arcount):
        start = pos
        pos = skip_name(data, pos)
        if pos + 10 > len(data):
            raise FormatError("additional record runs past the end")
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, pos)
        pos += 10 + rdlen
        if pos > len(data):
            raise FormatError("additional record data runs past the end")
        if rtype == TYPE_OPT:
            if edns is not None:
                raise FormatError("two OPT records")
            if data[start] != 0:
                raise FormatError("OPT record with a non-root name")
            edns = Edns(rclass, (ttl >> 16) & 0xFF, ttl & 0xFFFF, data[start:pos])
    if pos != len(data):
        raise FormatError("trailing bytes after the records")
    return Query(qid, flags, qname, qname.lower(), qtype, qclass, question, edns)


def opt_record(udp_size: int, flags: int, ext_rcode: int = 0) -> bytes:
    """Our OPT record: root name, type 41, payload size, extended rcode, version 0."""
    return b"\x00" + RR_FIXED.pack(TYPE_OPT, udp_size, (ext_rcode << 24) | (flags & EDNS_DO), 0)


def response_flags(query_flags: int, rcode: int, aa: bool = False, ra: bool = True) -> int:
    """Flags of an answer: QR, the query's opcode, RD and CD copied."""
    flags = FLAG_QR | (query_flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    if aa:
        flags |= FLAG_AA
    if ra:
        flags |= FLAG_RA
    return flags


def error_response(data: bytes, rcode: int) -> Optional[bytes]:
    """A header-only error answer echoing the ID (and the question when it parses)."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack_from(">HH", data)
    if flags & FLAG_QR:
        return None
    question = b""
    try:
        qdcount = U16.unpack_from(data, 4)[0]
        if qdcount == 1:
            qend = read_name(data, 12)
            if qend + 4 <= len(data):
                question = data[12 : qend + 4]
    except FormatError:
        question = b""
    return HEADER.pack(qid, response_flags(flags, rcode), 1 if question else 0, 0, 0, 0) + question


def encode_name(name: str) -> bytes:
    """``foo.bar`` -> wire form (lower-cased). ValueError on an empty or long label."""
    name = name.strip().rstrip(".")
    if not name:
        return b"\x00"
    out = bytearray()
    for label in name.split("."):
        raw = label.encode("utf-8")
        if not raw or len(raw) > 63:
            raise ValueError(f"bad label {label!r} in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"name {name!r} longer than 255 bytes")
    return bytes(out).lower()


def decode_name(wire: bytes) -> str:
    """Wire form (uncompressed) -> dotted text, for logs and tests."""
    labels = []
    pos = 0
    while pos < len(wire) and wire[pos]:
        length = wire[pos]
        labels.append(wire[pos + 1 : pos + 1 + length].decode("utf-8", "replace"))
        pos += 1 + length
    return ".".join(labels) + "."


def label_offsets(lname: bytes) -> List[int]:
    """Offsets of each suffix of a wire name, longest first (the name itself at 0)."""
    offsets = []
    pos = 0
    while pos < len(lname) and lname[pos]:
        offsets.append(pos)
        pos += 1 + lname[pos]
    return offsets


def parse_ip(text: str) -> Tuple[int, bytes]:
    """``"10.0.0.1"`` -> (4, packed); IPv4-mapped IPv6 counts as IPv4. ValueError if bad."""
    text = text.strip()
    if "%" in text:
        raise ValueError(f"scoped address {text!r}")
    try:
        return 4, socket.inet_pton(socket.AF_INET, text)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        raise ValueError(f"not an IP address: {text!r}")
    if packed[:12] == b"\x00" * 10 + b"\xff\xff":
        return 4, packed[12:]
    return 6, packed


class Scan(NamedTuple):
    """What ``scan_response`` found in an upstream answer."""

    rcode: int
    flags: int
    counts: Tuple[int, int, int]  # answer, authority, additional (OPT excluded)
    body: bytes  # the records after the question, OPT removed
    ttl_offsets: Tuple[Tuple[int, int], ...]  # (offset in body, ttl)
    min_ttl: Optional[int]  # lowest TTL of the answer records (None when no answers)
    negative_ttl: Optional[int]  # min(SOA ttl, SOA minimum) of the authority SOA
    cacheable: bool


def scan_response(data: bytes, question_len: int) -> Scan:
    """Walk an upstream response whose question section is ``question_len`` bytes.

    Raises FormatError on anything malformed."""
    if len(data) < 12:
        raise FormatError("short response")
    _qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if qdcount != 1:
        raise FormatError("response without exactly one question")
    start = 12 + question_len
    pos = start
    offsets: List[Tuple[int, int]] = []
    min_ttl: Optional[int] = None
    negative_ttl: Optional[int] = None
    opt_at: Optional[Tuple[int, int]] = None
    total = ancount + nscount + arcount
    for index in range(total):
        rr_start = pos
        pos = skip_name(data, pos)
        if pos + 10 > len(data):
            raise FormatError("record runs past the end")
        rtype, _rclass, ttl, rdlen = RR_FIXED.unpack_from(data, pos)
        ttl_at = pos + 4
        pos += 10 + rdlen
        if pos > len(data):
            raise FormatError("record data runs past the end")
        if rtype == TYPE_OPT:
            if index < ancount + nscount or opt_at is not None:
                raise FormatError("misplaced OPT record")
            opt_at = (rr_start, pos)
            continue
        if ttl & 0x80000000:
            ttl = 0
        offsets.append((ttl_at, ttl))
        if index < ancount:
            min_ttl = ttl if min_ttl is None else min(min_ttl, ttl)
        elif index < ancount + nscount and rtype == TYPE_SOA and rdlen >= 22:
            soa_minimum = U32.unpack_from(data, pos - 4)[0]
            negative_ttl = min(ttl, soa_minimum)
    if pos != len(data):
        raise FormatError("trailing bytes after the records")
    cacheable = not flags & FLAG_TC
    if opt_at is not None:
        if opt_at[1] != len(data):
            cacheable = False  # records after OPT could point into it: keep it simple
        body = data[start : opt_at[0]]
        arcount -= 1
    else:
        body = data[start:]
    ttl_offsets = tuple((off - start, ttl) for off, ttl in offsets)
    return Scan(
        flags & 0xF,
        flags,
        (ancount, nscount, arcount),
        body,
        ttl_offsets,
        min_ttl,
        negative_ttl,
        cacheable,
    )
