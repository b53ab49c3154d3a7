"""One cycle of the delivery protocol (design.md §1) for one feed.

Read `<cursor>-min = W - look-back` (exclusive) to `<cursor>-max = cycle start` (inclusive),
ascending, page by page until a short page; skip keys already processed; publish the rest in
(cursor, id) order; after each accepted event record its key, raise W and persist, before
the next event is published. A crash therefore repeats at most the event in flight and loses
nothing. Written against small interfaces so tests drive it without a network.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, NoReturn, Optional, Protocol

from atomsync import message as messages
from atomsync.atom import Entry, FeedError, context_value
from atomsync.config import FeedConfig
from atomsync.feed import Window
from atomsync.message import Message, MessageTooLarge
from atomsync.publish import Interrupted, Sink, SinkError
from atomsync.state import FeedState, Store

log = logging.getLogger(__name__)


class Source(Protocol):
    def fetch_page(
        self, feed: FeedConfig, window: Window, page: int, page_size: Optional[int] = None
    ) -> list[Entry]: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...


class DeadLetters(Protocol):
    def add(self, msg: Message, cursor_ms: int, reason: str) -> None: ...


class Observer(Protocol):
    def event(self, feed: str, action: str, entry_id: str) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class CycleOptions:
    page_size: int
    overlap_ms: int
    retention_ms: int
    on_permanent_failure: str = "deadletter"  # deadletter | halt
    lookback_ms: Optional[int] = None  # set for a sweep: a much longer look-back
    max_ms: Optional[int] = None  # upper bound override (replay); default: cycle start


@dataclass
class CycleResult:
    feed: str
    sweep: bool = False
    pages: int = 0
    fetched: int = 0
    published: int = 0
    skipped: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    error: Optional[BaseException] = None
    stopped: bool = False
    watermark_ms: Optional[int] = None
    duration_s: float = 0.0
    failed_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.stopped


class StopCycle(Exception):
    """Internal: end the walk (stop requested, or a failure already recorded)."""


def window_for(state: FeedState, opts: CycleOptions, now_ms: int) -> Window:
    """The read window. Always reaches at least 1 ms behind W: `-min` is exclusive, and
    entries sharing W's timestamp but not yet read must come back (then deduplicated)."""
    max_ms = opts.max_ms if opts.max_ms is not None else now_ms
    if state.watermark_ms is None:
        return Window(state.cursor, state.floor_ms, max_ms)
    look = max(opts.lookback_ms if opts.lookback_ms is not None else opts.overlap_ms, 1)
    min_ms = state.watermark_ms - look
    if state.floor_ms is not None:
        min_ms = max(min_ms, state.floor_ms)
    return Window(state.cursor, min_ms, max_ms)


def passes(entry: Entry, filters: tuple[tuple[str, frozenset[str]], ...]) -> bool:
    return all(context_value(entry, name) in wanted for name, wanted in filters)


def run_cycle(
    feed: FeedConfig,
    state: FeedState,
    *,
    source: Source,
    sink: Sink,
    store: Store,
    clock: Clock,
    opts: CycleOptions,
    dead_letters: Optional[DeadLetters] = None,
    should_stop: Callable[[], bool] = lambda: False,
    observer: Optional[Observer] = None,
) -> CycleResult:
    """Run one cycle, mutating `state` and saving it after every processed event."""
    started = time.monotonic()
    result = _Cycle(
        feed, state, source, sink, store, clock, opts, dead_letters, should_stop, observer
    ).run()
    result.duration_s = time.monotonic() - started
    result.watermark_ms = state.watermark_ms
    return result


@dataclass
class _Cycle:
    feed: FeedConfig
    state: FeedState
    source: Source
    sink: Sink
    store: Store
    clock: Clock
    opts: CycleOptions
    dead_letters: Optional[DeadLetters]
    should_stop: Callable[[], bool]
    observer: Optional[Observer]
    result: CycleResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = CycleResult(self.feed.name, sweep=self.opts.lookback_ms is not None)

    def run(self) -> CycleResult:
        self.state.prune(self.opts.retention_ms)
        window = window_for(self.state, self.opts, self.clock.now_ms())
        with contextlib.suppress(StopCycle):
            self.walk(window)
        return self.result

    def walk(self, window: Window) -> None:
        cursor, size = self.state.cursor, self.opts.page_size
        carry: list[Entry] = []
        previous: Optional[list[str]] = None
        page = 1
        while True:
            self.check_stop()
            try:
                entries = self.source.fetch_page(self.feed, window, page, size)
            except FeedError as exc:
                self.fail(exc)
            self.result.pages += 1
            self.result.fetched += len(entries)
            full = len(entries) >= size
            ids = [e.key(cursor) for e in entries]
            if full and ids == previous:
                self.fail(FeedError(f"HCM returned page {page} twice: it ignores `page`"))
            previous = ids
            batch = carry + entries
            if full:
                # A run of equal timestamps may continue on the next page: hold it back so
                # the run is published in (cursor, id) order however HCM split it.
                top = max(e.cursor_ms(cursor) for e in entries)
                carry = [e for e in batch if e.cursor_ms(cursor) == top]
                ready = [e for e in batch if e.cursor_ms(cursor) != top]
            else:
                carry, ready = [], batch
            unique = {e.key(cursor): e for e in ready}  # a page shift can repeat an entry
            for entry in sorted(unique.values(), key=lambda e: (e.cursor_ms(cursor), e.id)):
                self.process(entry)
            if not full:
                return
            page += 1

    def process(self, entry: Entry) -> None:
        cursor = self.state.cursor
        key, at = entry.key(cursor), entry.cursor_ms(cursor)
        floor = self.state.floor_ms
        if self.state.seen(key) or (floor is not None and at <= floor):
            self.result.skipped += 1
            return
        if not passes(entry, self.feed.filters):
            self.result.filtered += 1
            self.commit(key, at, "filtered", entry.id)
            self.check_stop()
            return
        try:
            msg = self.message(entry, self.sink.max_request_bytes)
            self.sink.publish(msg)
        except Interrupted:
            self.result.stopped = True
            raise StopCycle() from None
        except MessageTooLarge as exc:
            self.reject(entry, key, at, str(exc), None)
            return
        except SinkError as exc:
            if exc.retryable or exc.config_level:
                self.result.failed_ids.append(entry.id)
                self.fail(exc)
            self.reject(entry, key, at, str(exc), msg)
            return
        if entry.content_error is not None:
            log.warning(
                "%s: published %s with its raw content, which could not be read: %s",
                self.feed.name,
                entry.id,
                entry.content_error,
                extra={"feed": self.feed.name, "entry_id": entry.id, "action": "published"},
            )
        self.state.published += 1
        self.state.last_published_ms = self.clock.now_ms()
        self.result.published += 1
        self.commit(key, at, "published", entry.id)
        log.info(
            "%s: published %s (%s)",
            self.feed.name,
            entry.id,
            msg.title,
            extra={"feed": self.feed.name, "entry_id": entry.id, "action": "published"},
        )
        self.check_stop()  # after the log line: a stop must not hide the event it let finish

    def reject(self, entry: Entry, key: str, at: int, reason: str, msg: Optional[Message]) -> None:
        """The sink refused this event for good: dead-letter it and move on, or halt."""
        self.result.failed_ids.append(entry.id)
        if self.opts.on_permanent_failure != "deadletter" or self.dead_letters is None:
            self.fail(SinkError(f"{entry.id} rejected: {reason}", retryable=False))
        if msg is None:  # too large to build: keep the untrimmed body for inspection
            msg = self.message(entry, None)
        try:
            self.dead_letters.add(msg, at, reason)
        except OSError as exc:
            self.fail(exc)
        self.state.dead_letters += 1
        self.result.dead_lettered += 1
        self.commit(key, at, "deadlettered", entry.id)
        log.error(
            "%s: %s rejected for good, written to the dead-letter file: %s",
            self.feed.name,
            entry.id,
            reason,
            extra={"feed": self.feed.name, "entry_id": entry.id, "action": "deadlettered"},
        )
        self.check_stop()

    def message(self, entry: Entry, limit: Optional[int]) -> Message:
        """The entry as a message, trimmed to `limit` bytes (None: untrimmed)."""
        return messages.build(
            entry,
            feed=self.feed.name,
            workspace=self.feed.workspace,
            cursor=self.state.cursor,
            title_template=self.feed.title,
            topic_id=self.feed.topic_id,
            limit=limit or 1 << 62,
        )

    def commit(self, key: str, at: int, action: str, entry_id: str) -> None:
        self.state.record(key, at)
        try:
            self.store.save(self.feed.name, self.state)
        except OSError as exc:
            # Published but not recorded: it will be published again (the crash window).
            self.fail(OSError(exc.errno, f"cannot save state: {exc.strerror}"))
        if self.observer is not None:
            self.observer.event(self.feed.name, action, entry_id)

    def check_stop(self) -> None:
        if self.should_stop():
            self.result.stopped = True
            raise StopCycle()

    def fail(self, exc: BaseException) -> NoReturn:
        self.result.error = exc
        raise StopCycle()
