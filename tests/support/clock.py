"""A clock tests move by hand: ``clock.now += 0.5``; calling it reads the time."""


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
