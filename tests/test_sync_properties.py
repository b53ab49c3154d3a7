"""Property tests of the protocol: whatever the arrival order, page size, timestamp ties,
stops and crashes, every entry is published at least once, and an entry is published twice
only when a crash hit it while it was in flight."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomsync.config import FeedConfig
from atomsync.message import Message
from atomsync.state import FeedState, MemoryStore
from atomsync.sync import CycleOptions, run_cycle
from tests.fakes import Clock, Crash, FakeHcm, RecordingSink, entry

BASE = 1_709_543_722_000
STEP_MS = 10_000  # one cycle every 10 s of simulated time
OVERLAP_MS = 30_000


@dataclass(frozen=True)
class Arrival:
    step: int  # cycle before which the entry becomes visible
    offset_ms: int  # cursor relative to that cycle's clock: negative = late, positive = future
    id_: int


arrivals = st.lists(
    st.builds(
        Arrival,
        step=st.integers(0, 8),
        # A few distinct offsets make equal timestamps common; all late ones stay inside
        # the overlap, which is what the normal cycle promises to catch.
        offset_ms=st.sampled_from([-29_999, -15_000, -1, 0, 0, 0, 1, 7_000, 25_000]),
        id_=st.integers(0, 15),
    ),
    min_size=1,
    max_size=45,
)


@dataclass(frozen=True)
class Fault:
    at_publish: int  # the n-th publish attempt overall
    kind: str  # crash_before | crash_after | crash_on_save | stop


faults = st.lists(
    st.builds(
        Fault,
        at_publish=st.integers(0, 60),
        kind=st.sampled_from(["crash_before", "crash_after", "crash_on_save", "stop"]),
    ),
    max_size=6,
)

FEED = FeedConfig("newhire", "newhire", "employee", "/x", title="{PersonName}")


class CrashingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.crash_next = False

    def save(self, feed: str, state: FeedState) -> None:
        if self.crash_next:
            self.crash_next = False
            raise Crash()
        super().save(feed, state)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(arrivals=arrivals, page_size=st.integers(1, 7), faults=faults)
def test_every_entry_published_at_least_once_and_twice_only_after_a_crash(
    arrivals: list[Arrival], page_size: int, faults: list[Fault]
) -> None:
    hcm, sink, store, clock = FakeHcm(), RecordingSink(), CrashingStore(), Clock(BASE)
    plan = {f.at_publish: f.kind for f in faults}
    attempts = {"n": 0}
    stop_now = {"flag": False}
    in_flight_crashes: Counter[str] = Counter()  # key -> crashes after acceptance
    state = FeedState("updated", watermark_ms=BASE - 1, floor_ms=BASE - 60_000)

    def before(message: Message) -> None:
        n = attempts["n"]
        attempts["n"] += 1
        kind = plan.get(n)
        if kind == "crash_before":
            raise Crash()
        if kind == "stop":
            stop_now["flag"] = True
        if kind == "crash_on_save":
            store.crash_next = True
            in_flight_crashes[message.key] += 1

    def after(message: Message) -> None:
        if plan.get(attempts["n"] - 1) == "crash_after":
            in_flight_crashes[message.key] += 1
            raise Crash()

    sink.before, sink.after = before, after
    opts = CycleOptions(page_size=page_size, overlap_ms=OVERLAP_MS, retention_ms=10 * OVERLAP_MS)
    expected: set[str] = set()
    last_step = max(a.step for a in arrivals) + 6  # room for future-dated entries to mature

    for step in range(last_step):
        clock.now = BASE + step * STEP_MS
        for a in arrivals:
            if a.step == step:
                e = entry(f"atomservlet:newhire:EMP{a.id_}", clock.now + a.offset_ms)
                if e.key("updated") not in expected:
                    hcm.add(e)
                    expected.add(e.key("updated"))
        for _ in range(3):  # a stopped or crashed cycle is followed by a fresh one
            stop_now["flag"] = False
            try:
                result = run_cycle(
                    FEED,
                    state,
                    source=hcm,
                    sink=sink,
                    store=store,
                    clock=clock,
                    opts=opts,
                    should_stop=lambda: stop_now["flag"],
                )
            except Crash:
                saved = store.load(FEED.name)
                assert saved is not None or store.saves == 0
                state = saved or FeedState("updated", watermark_ms=BASE - 1, floor_ms=BASE - 60_000)
                continue
            assert result.error is None
            if not result.stopped:
                break

    published = Counter(m.key for m in sink.accepted)
    assert set(published) == expected, "an entry was lost"
    for key, count in published.items():
        assert count <= 1 + in_flight_crashes[key], f"{key} published {count} times"
