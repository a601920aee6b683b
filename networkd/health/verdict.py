"""From probe results to a verdict, with rise and fall (pure logic, table-tested).

- A check starts UNKNOWN. Its first success makes it PASSING at once (a cold start must
  not wait ``rise`` intervals before a VIP can be owned); ``fall`` failures in a row make
  it FAILING.
- PASSING turns FAILING after ``fall`` failures in a row.
- FAILING turns PASSING only after ``rise`` successes in a row.
"""

import dataclasses

PASSING = "PASSING"
FAILING = "FAILING"
UNKNOWN = "UNKNOWN"


@dataclasses.dataclass(frozen=True)
class Verdict:
    state: str = UNKNOWN
    ok_streak: int = 0
    fail_streak: int = 0


def judge(verdict: Verdict, ok: bool, rise: int, fall: int) -> Verdict:
    """The verdict after one more probe result."""
    if ok:
        streak = verdict.ok_streak + 1
        state = verdict.state
        if state == UNKNOWN or (state == FAILING and streak >= rise):
            state = PASSING
        return Verdict(state, streak, 0)
    streak = verdict.fail_streak + 1
    state = FAILING if streak >= fall else verdict.state
    return Verdict(state, 0, streak)
