"""DNS wire format of client queries: a minimal, strict, hand-written parser.

Hand-written because it runs for every query that misses the memo (bench/dns.py prints
it against dnslib: several times faster); everything else that reads or builds messages
outside the hot path uses dnslib (networkd/dns/fill.py, answers.py).

Nothing here trusts the bytes. ``parse_query`` returns a ``Query`` or raises
``FormatError`` (answer FORMERR) or ``Ignore`` (stay silent). Names are kept in wire form;
their lower-cased wire form (``bytes.lower()`` only touches ASCII letters, never label
lengths, which are at most 63) is the key of every table.
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
TYPE_IXFR = 251
TYPE_AXFR = 252
TYPE_ANY = 255
ZONE_TRANSFERS = (TYPE_IXFR, TYPE_AXFR)
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5
RCODE_BADVERS = 16  # extended: 1 in the OPT record's upper rcode bits, 0 in the header
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

    @property
    def dnssec_ok(self) -> bool:
        return self.edns is not None and bool(self.edns.flags & EDNS_DO)

    def cache_key(self) -> bytes:
        """(name, type, class) lower-cased, plus DO and CD: answers differ by both."""
        bits = (2 if self.dnssec_ok else 0) | (1 if self.flags & FLAG_CD else 0)
        return self.lname + self.question[-4:] + bytes((bits,))


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
    qend = read_name(data, 12)
    if qend + 4 > len(data):
        raise FormatError("question runs past the end")
    qtype, qclass = struct.unpack_from(">HH", data, qend)
    if ancount or (nscount and not (qtype == TYPE_IXFR and nscount == 1)):
        raise FormatError("answer or authority records in a query")  # IXFR carries an SOA
    qname = data[12:qend]
    question = data[12 : qend + 4]
    pos = qend + 4
    edns: Optional[Edns] = None
    for index in range(nscount + arcount):
        start = pos
        pos = skip_name(data, pos)
        if pos + 10 > len(data):
            raise FormatError("additional record runs past the end")
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, pos)
        pos += 10 + rdlen
        if pos > len(data):
            raise FormatError("additional record data runs past the end")
        if rtype == TYPE_OPT and index >= nscount:
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


def decode_labels(wire_name: bytes) -> List[bytes]:
    """Wire form (uncompressed, already validated) -> its labels, case kept."""
    labels = []
    pos = 0
    while pos < len(wire_name) and wire_name[pos]:
        length = wire_name[pos]
        labels.append(wire_name[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return labels


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
