"""Token bucket arithmetic with a fake clock (no sleeping)."""

from __future__ import annotations

from atomsync.pacing import SAFETY, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_first_token_is_free_then_spaced_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)
    assert bucket.reserve() == 0.0
    spacing = 1 / SAFETY
    waits = [bucket.reserve() for _ in range(3)]
    assert [round(w, 6) for w in waits] == [round(spacing * k, 6) for k in (1, 2, 3)]


def test_long_run_rate_is_exact_whatever_the_sleeps_overshoot() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock)
    sent = 0
    start = clock.t
    while clock.t - start < 60:
        wait = bucket.reserve()
        clock.t += wait + 0.003  # every sleep overshoots a little
        sent += 1
    assert 0.97 * 600 <= sent <= 600


def test_idle_time_refills_at_most_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst=2, clock=clock)
    clock.t += 3600
    assert bucket.reserve() == 0.0 and bucket.reserve() == 0.0
    assert bucket.reserve() > 0.9


def test_refund_returns_a_token() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)
    bucket.reserve()
    wait = bucket.reserve()
    bucket.refund()
    assert bucket.reserve() == wait
