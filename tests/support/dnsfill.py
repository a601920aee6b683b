"""Cache fills of whole upstream answers, for tests that build answers with dnspython."""

from networkd.dns import wire
from networkd.dns.fill import Fill, fill_from_answer


def fill_of(data: bytes, now: float) -> Fill:
    """``fill_from_answer`` with the question length read from the answer itself."""
    try:
        question_len = wire.read_name(data, 12) + 4 - 12 if len(data) > 12 else 0
    except wire.FormatError:
        question_len = 0
    return fill_from_answer(data, question_len, now)
