"""When the watcher counts its etcd connection as stuck (networkd.etcd.probe_pace): a
slow etcd's late answers keep the watch, silence ends it."""

from typing import List, Tuple

import pytest

from networkd.etcd.probe_pace import ProbePace

# (time, what happens): "tick" sends a probe if allowed, "answer" a probe answered (late
# or not), "fail" a probe failed with an error
Script = List[Tuple[float, str]]


def run(script: Script, silence: float = 1.5, max_out: int = 4) -> Tuple[List[bool], bool, int]:
    pace = ProbePace(silence, 0.0, max_out)
    sent: List[bool] = []
    for at, what in script:
        if what == "tick":
            sent.append(pace.send())
        elif what == "answer":
            pace.answered(at)
        else:
            pace.failed()
    last = script[-1][0] if script else 0.0
    return sent, pace.stuck(last), pace.out


@pytest.mark.parametrize(
    "script, sent, stuck",
    [
        # a healthy etcd: every probe answered at once
        (
            [(0.5, "tick"), (0.51, "answer"), (1.0, "tick"), (1.01, "answer"), (1.5, "tick")],
            [True, True, True],
            False,
        ),
        # a slow etcd: every answer 1.8 s late (more than the old 1 s deadline), but one
        # arrives every 0.5 s: never stuck
        (
            [
                (0.5, "tick"),
                (1.0, "tick"),
                (1.5, "tick"),
                (2.0, "tick"),
                (2.3, "answer"),
                (2.5, "tick"),
                (2.8, "answer"),
                (3.0, "tick"),
                (3.3, "answer"),
                (3.4, "tick"),
            ],
            [True, True, True, True, True, True, True],
            False,
        ),
        # a stall: no answer for more than 1.5 s, sends stop at 4 outstanding
        (
            [
                (0.5, "tick"),
                (1.0, "tick"),
                (1.5, "tick"),
                (2.0, "tick"),
                (2.5, "tick"),
                (3.0, "tick"),
            ],
            [True, True, True, True, False, False],
            True,
        ),
        # stuck counts from the last answer, not from the start
        (
            [(0.5, "tick"), (0.6, "answer"), (1.0, "tick"), (1.5, "tick"), (2.0, "tick")],
            [True, True, True, True],
            False,
        ),
        (
            [
                (0.5, "tick"),
                (0.6, "answer"),
                (1.0, "tick"),
                (1.5, "tick"),
                (2.0, "tick"),
                (2.2, "tick"),
            ],
            [True, True, True, True, True],
            True,
        ),
        # a failed probe frees its slot (the reader cancels on the error itself)
        ([(0.5, "tick"), (0.6, "fail"), (1.0, "tick")], [True, True], False),
    ],
)
def test_stuck_only_after_silence_and_probes_capped(script, sent, stuck):
    got_sent, got_stuck, _out = run(script)
    assert got_sent == sent
    assert got_stuck == stuck


def test_an_answer_never_moves_the_last_answer_back():
    pace = ProbePace(1.5, 10.0)
    pace.send()
    pace.answered(9.0)  # a clock read before the watch started: ignored
    assert pace.answered_at == 10.0 and pace.out == 0
