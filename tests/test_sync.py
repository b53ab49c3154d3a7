"""The delivery protocol, driven through in-memory twins (no network)."""

from __future__ import annotations

from typing import Optional

import pytest

from atomsync.atom import FeedError
from atomsync.config import FeedConfig, StartAt
from atomsync.publish import Interrupted, SinkError
from atomsync.state import FeedState, MemoryStore, initial_state
from atomsync.sync import CycleOptions, CycleResult, run_cycle, window_for
from tests.fakes import Clock, Crash, FakeHcm, RecordingSink, entry, failing

T0 = 1_709_543_722_000  # 2024-03-04T09:15:22.000Z
SEC = 1000


def feed_cfg(**kw: object) -> FeedConfig:
    base: dict[str, object] = {
        "name": "newhire",
        "collection": "newhire",
        "workspace": "employee",
        "path": "/hcmRestApi/atomservlet/employee/newhire",
        "title": "New hire: {display_name} ({PersonNumber})",
    }
    base.update(kw)
    return FeedConfig(**base)  # type: ignore[arg-type]


class Harness:
    def __init__(
        self,
        *,
        page_size: int = 25,
        overlap_s: int = 300,
        start: Optional[FeedState] = None,
        feed: Optional[FeedConfig] = None,
        policy: str = "deadletter",
    ) -> None:
        self.hcm = FakeHcm()
        self.sink = RecordingSink()
        self.store = MemoryStore()
        self.clock = Clock(T0 + 3600 * SEC)
        self.feed = feed or feed_cfg()
        self.state = start or FeedState("updated")
        self.page_size = page_size
        self.overlap_ms = overlap_s * SEC
        self.policy = policy
        self.dead: list[tuple[str, str]] = []

    def add(self, msg: object, cursor_ms: int, reason: str) -> None:  # DeadLetters
        self.dead.append((getattr(msg, "entry_id", ""), reason))

    def cycle(
        self, lookback_s: Optional[int] = None, stop_after: Optional[int] = None
    ) -> CycleResult:
        calls = {"n": 0}

        def should_stop() -> bool:
            calls["n"] += 1
            return stop_after is not None and len(self.sink.accepted) >= stop_after

        opts = CycleOptions(
            page_size=self.page_size,
            overlap_ms=self.overlap_ms,
            retention_ms=max(self.overlap_ms, (lookback_s or 0) * SEC) + 3600 * SEC,
            on_permanent_failure=self.policy,
            lookback_ms=lookback_s * SEC if lookback_s is not None else None,
        )
        return run_cycle(
            self.feed,
            self.state,
            source=self.hcm,
            sink=self.sink,
            store=self.store,
            clock=self.clock,
            opts=opts,
            dead_letters=self,
            should_stop=should_stop,
        )

    def restart(self) -> None:
        """A new process: only what was saved survives."""
        saved = self.store.load(self.feed.name)
        self.state = saved if saved is not None else FeedState("updated")


def test_57_entries_with_page_size_25_are_published_once_in_order() -> None:
    h = Harness()
    h.hcm.add(*(entry(f"atomservlet:newhire:EMP{i:03d}", T0 + i * SEC) for i in range(57)))
    result = h.cycle()
    assert result.ok and result.published == 57 and result.pages == 3
    assert h.sink.ids() == [f"atomservlet:newhire:EMP{i:03d}" for i in range(57)]
    assert h.state.watermark_ms == T0 + 56 * SEC
    assert h.store.saves == 57  # persisted after every accepted event
    again = h.cycle()
    assert again.published == 0 and again.skipped == 57


def test_equal_timestamps_straddling_pages_then_more_at_the_same_millisecond() -> None:
    h = Harness()
    same = T0 + 123
    h.hcm.add(*(entry(f"atomservlet:newhire:EMP{i:03d}", same) for i in range(40)))
    assert h.cycle().published == 40
    # (cursor, id) order, although the source serves ties newest-inserted first.
    assert h.sink.ids() == sorted(h.sink.ids())
    h.hcm.add(*(entry(f"atomservlet:newhire:EMP{i:03d}", same) for i in range(40, 47)))
    result = h.cycle()
    assert result.published == 7 and result.skipped == 40
    ids = h.sink.ids()
    assert len(ids) == len(set(ids)) == 47


def test_late_entry_behind_the_watermark_within_overlap_is_published_once() -> None:
    h = Harness(overlap_s=300)
    h.hcm.add(entry("atomservlet:newhire:EMP1", T0))
    h.cycle()
    h.hcm.add(entry("atomservlet:newhire:LATE", T0 - 60 * SEC))
    assert h.cycle().published == 1
    assert h.cycle().published == 0
    assert h.sink.ids() == ["atomservlet:newhire:EMP1", "atomservlet:newhire:LATE"]
    assert h.state.watermark_ms == T0  # a late entry never moves W backwards


def test_entry_later_than_the_overlap_is_caught_by_the_sweep_only() -> None:
    h = Harness(overlap_s=300)
    h.hcm.add(entry("atomservlet:newhire:EMP1", T0))
    h.cycle()
    h.hcm.add(entry("atomservlet:newhire:APPROVED", T0 - 3 * 3600 * SEC))
    assert h.cycle().published == 0
    sweep = h.cycle(lookback_s=24 * 3600)
    assert sweep.sweep and sweep.published == 1 and sweep.skipped == 1
    assert h.cycle(lookback_s=24 * 3600).published == 0


def test_same_id_with_a_new_timestamp_is_a_new_event() -> None:
    h = Harness()
    h.hcm.add(entry("atomservlet:empupdate:EMP1", T0))
    h.cycle()
    h.hcm.add(entry("atomservlet:empupdate:EMP1", T0 + 5 * SEC))
    assert h.cycle().published == 1
    assert h.sink.ids() == ["atomservlet:empupdate:EMP1"] * 2


def test_start_at_now_publishes_nothing_older() -> None:
    now = T0 + 3600 * SEC
    h = Harness(start=initial_state("updated", "now", None, now))
    h.hcm.add(entry("atomservlet:newhire:OLD", now - 10 * SEC))  # inside the overlap
    h.hcm.add(entry("atomservlet:newhire:AT", now))  # exactly at the start: excluded
    h.clock.now = now + 5 * SEC
    h.hcm.add(entry("atomservlet:newhire:NEW", now + 1))
    result = h.cycle()
    assert h.sink.ids() == ["atomservlet:newhire:NEW"]
    assert result.skipped == 0  # the floor keeps them out of the query altogether


def test_start_at_beginning_reads_everything() -> None:
    h = Harness(start=initial_state("updated", "beginning", None, T0))
    h.hcm.add(entry("atomservlet:newhire:A", 1000), entry("atomservlet:newhire:B", T0))
    assert h.cycle().published == 2
    assert h.hcm.requests[0][0] is None  # no -min at all


def test_window_reaches_behind_the_watermark_even_with_zero_overlap() -> None:
    opts = CycleOptions(page_size=25, overlap_ms=0, retention_ms=0)
    window = window_for(FeedState("updated", watermark_ms=T0), opts, T0 + 10)
    assert window.min_ms == T0 - 1 and window.max_ms == T0 + 10


def test_entries_appearing_between_page_requests_are_not_lost() -> None:
    h = Harness(page_size=10)
    h.hcm.add(*(entry(f"atomservlet:newhire:E{i:02d}", T0 + i * SEC) for i in range(25)))

    def shift(page: int) -> None:
        if page == 2:  # a late commit with an older timestamp shifts every later page
            h.hcm.add(entry("atomservlet:newhire:LATE", T0 - SEC))

    h.hcm.before_page = shift
    h.cycle()
    h.hcm.before_page = None
    h.cycle()
    ids = h.sink.ids()
    assert len(ids) == len(set(ids)) == 26


def test_future_dated_entry_waits_until_it_takes_effect() -> None:
    h = Harness()
    h.clock.now = T0
    h.hcm.add(entry("atomservlet:newhire:NOW", T0 - SEC))
    h.hcm.add(entry("atomservlet:newhire:MAY", T0 + 10 * SEC))  # effective later
    assert h.cycle().published == 1
    h.clock.now = T0 + 11 * SEC
    assert h.cycle().published == 1
    assert h.sink.ids()[-1] == "atomservlet:newhire:MAY"


def test_sink_down_keeps_the_watermark_at_the_last_accepted_event() -> None:
    h = Harness()
    h.hcm.add(*(entry(f"atomservlet:newhire:E{i}", T0 + i * SEC) for i in range(5)))
    boom = SinkError("503", retryable=True, kind="server")

    def fail_third(message: object) -> None:
        if getattr(message, "entry_id", "").endswith("E2"):
            raise boom

    h.sink.before = fail_third
    result = h.cycle()
    assert result.error is boom and result.published == 2
    assert h.state.watermark_ms == T0 + 1 * SEC
    h.sink.before = None
    h.restart()
    assert h.cycle().published == 3
    assert h.sink.ids() == [f"atomservlet:newhire:E{i}" for i in range(5)]


def test_permanent_rejection_is_dead_lettered_and_the_feed_moves_on() -> None:
    h = Harness()
    h.hcm.add(*(entry(f"atomservlet:newhire:E{i}", T0 + i * SEC) for i in range(3)))

    def reject_middle(message: object) -> None:
        if getattr(message, "entry_id", "").endswith("E1"):
            raise SinkError("400 InvalidParameter", retryable=False, kind="rejected")

    h.sink.before = reject_middle
    result = h.cycle()
    assert result.ok and result.published == 2 and result.dead_lettered == 1
    assert h.dead == [("atomservlet:newhire:E1", "400 InvalidParameter")]
    assert h.state.watermark_ms == T0 + 2 * SEC and h.state.dead_letters == 1


def test_halt_policy_stops_the_feed_at_a_rejected_event() -> None:
    h = Harness(policy="halt")
    h.hcm.add(*(entry(f"atomservlet:newhire:E{i}", T0 + i * SEC) for i in range(3)))
    h.sink.before = failing(SinkError("400", retryable=False))
    result = h.cycle()
    assert result.error is not None and result.published == 0 and not h.dead
    assert h.state.watermark_ms is None


def test_config_level_sink_error_is_never_dead_lettered() -> None:
    h = Harness()
    h.hcm.add(entry("atomservlet:newhire:E0", T0))
    h.sink.before = failing(SinkError("401", retryable=True, config_level=True, kind="auth"))
    result = h.cycle()
    assert result.error is not None and not h.dead and h.state.watermark_ms is None


def test_source_failure_leaves_the_state_alone() -> None:
    h = Harness()
    h.hcm.add(entry("atomservlet:newhire:E0", T0))
    h.hcm.fail_next.append(FeedError("HCM answered 500"))
    result = h.cycle()
    assert isinstance(result.error, FeedError) and result.published == 0
    assert h.store.saves == 0 and h.state.watermark_ms is None


def test_filtered_events_still_advance_the_watermark() -> None:
    feed = feed_cfg(filters=(("WorkerType", frozenset({"EMP"})),))
    h = Harness(feed=feed)
    h.hcm.add(entry("atomservlet:newhire:EMP", T0, WorkerType="EMP", PersonName="A, B"))
    h.hcm.add(entry("atomservlet:newhire:CWK", T0 + SEC, WorkerType="CWK"))
    result = h.cycle()
    assert result.published == 1 and result.filtered == 1
    assert h.sink.ids() == ["atomservlet:newhire:EMP"]
    assert h.state.watermark_ms == T0 + SEC
    assert h.cycle().published == 0


def test_stop_request_finishes_the_event_in_flight_and_saves_it() -> None:
    h = Harness()
    h.hcm.add(*(entry(f"atomservlet:newhire:E{i}", T0 + i * SEC) for i in range(10)))
    result = h.cycle(stop_after=3)
    assert result.stopped and result.published == 3
    assert h.store.load("newhire").watermark_ms == T0 + 2 * SEC  # type: ignore[union-attr]


def test_interrupted_wait_for_a_token_publishes_nothing() -> None:
    h = Harness()
    h.hcm.add(entry("atomservlet:newhire:E0", T0))

    def interrupted(message: object) -> None:
        raise Interrupted()

    h.sink.before = interrupted
    result = h.cycle()
    assert result.stopped and result.published == 0 and h.state.watermark_ms is None


def test_crash_after_acceptance_duplicates_only_the_event_in_flight() -> None:
    h = Harness()
    h.hcm.add(*(entry(f"atomservlet:newhire:E{i}", T0 + i * SEC) for i in range(6)))

    def crash_on_e3(message: object) -> None:
        if getattr(message, "entry_id", "").endswith("E3"):
            raise Crash()

    h.sink.after = crash_on_e3
    with pytest.raises(Crash):
        h.cycle()
    h.sink.after = None
    h.restart()
    h.cycle()
    ids = h.sink.ids()
    assert set(ids) == {f"atomservlet:newhire:E{i}" for i in range(6)}
    assert ids.count("atomservlet:newhire:E3") == 2 and len(ids) == 7


def test_source_ignoring_page_parameter_fails_instead_of_looping() -> None:
    h = Harness(page_size=2)
    h.hcm.add(*(entry(f"atomservlet:newhire:E{i}", T0 + i * SEC) for i in range(5)))
    original = h.hcm.fetch_page

    def always_first(feed: FeedConfig, window: object, page: int, size: object = None) -> list:  # type: ignore[type-arg]
        return original(feed, window, 1, size)  # type: ignore[arg-type]

    h.hcm.fetch_page = always_first  # type: ignore[method-assign]
    result = h.cycle()
    assert isinstance(result.error, FeedError) and "ignores `page`" in str(result.error)


def test_published_cursor_uses_published_timestamps() -> None:
    feed = feed_cfg(cursor="published", start_at=StartAt("beginning"))
    h = Harness(feed=feed, start=FeedState("published"))
    # future-dated hire: updated is the effective date, published when keyed in
    h.hcm.add(entry("atomservlet:newhire:MAY", T0 + 30 * 86400 * SEC, published_ms=T0))
    assert h.cycle().published == 1
    assert h.state.watermark_ms == T0
