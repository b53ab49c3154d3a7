"""Runs cycles over every configured feed: state loading, per-feed back-off, sweeps.

Feeds are independent: each has its own state file, its own back-off, and a failure in one
never stalls another. Their HCM requests may overlap (bounded by hcm.max_connections);
publishing stays in order within each feed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from atomsync.atom import FeedError
from atomsync.config import Config, FeedConfig
from atomsync.errors import StateError
from atomsync.publish import Sink, SinkError
from atomsync.state import FeedState, Store, initial_state
from atomsync.status import FeedHealth, Heartbeat
from atomsync.sync import (
    Clock,
    CycleOptions,
    CycleResult,
    DeadLetters,
    Observer,
    Source,
    run_cycle,
)
from atomsync.timeutil import format_ms, format_optional

log = logging.getLogger(__name__)

# status.json is rewritten after every cycle, but at most this often (seconds).
HEARTBEAT_SECONDS = 0.5

# Failures that need a person (credentials, roles, URLs): logged as errors, not warnings.
_SETUP_KINDS = {"auth", "forbidden", "not_found", "login_page", "tls"}


class Backoff:
    """Exponential back-off with full jitter, per feed; reset by a success."""

    def __init__(self, base: float, cap: float, rng: Optional[random.Random] = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()
        self.failures = 0
        self.until = 0.0  # monotonic time before which the feed is not polled

    def ready(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float, retry_after: Optional[float] = None) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** (self.failures - 1))
        # Jitter in the upper half keeps growth visible while spreading restarts apart.
        delay = self.rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.until = 0.0


class CycleMetrics(Protocol):
    def cycle(self, result: CycleResult, last_success_ms: Optional[int]) -> None: ...

    def write_textfile(self) -> None: ...


@dataclass
class RunnerParts:
    source: Source
    sink: Sink
    store: Store
    clock: Clock
    dead_letters: Optional[DeadLetters] = None
    heartbeat: Optional[Heartbeat] = None
    observer: Optional[Observer] = None
    metrics: Optional[CycleMetrics] = None


class Runner:
    def __init__(
        self,
        cfg: Config,
        parts: RunnerParts,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        persist_new: bool = True,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.cfg = cfg
        self.parts = parts
        self.should_stop = should_stop
        self.persist_new = persist_new
        self.states: dict[str, FeedState] = {}
        self.backoff = {
            f.name: Backoff(cfg.poll.interval_seconds, cfg.poll.backoff_max_seconds, rng)
            for f in cfg.feeds
        }
        self.next_sweep = 0.0  # the first cycle of a run sweeps: catch up after downtime
        # Feeds whose sweep is due but has not yet succeeded: a failed or skipped (backing
        # off) sweep is retried on the feed's next cycle, not an interval later.
        self.sweep_pending: set[str] = set()
        self.cycles = 0
        self.took: dict[str, float] = {}  # seconds each feed's last cycle took
        self.last_beat = float("-inf")  # monotonic time of the last status.json write
        self.beat_pending = False  # a cycle ran since then
        self.lock = threading.Lock()
        self.pool: Optional[ThreadPoolExecutor] = None

    # ------------------------------------------------------------------ state

    def load_states(self) -> None:
        """Load every feed's state now, so that a bad file stops the start (exit 78)."""
        store, now = self.parts.store, self.parts.clock.now_ms()
        for feed in self.cfg.feeds:
            state = store.load(feed.name)
            if state is None:
                state = initial_state(feed.cursor, feed.start_at.kind, feed.start_at.at_ms, now)
                log.info(
                    "%s: no state yet; starting at %s",
                    feed.name,
                    "the beginning" if state.floor_ms is None else format_ms(state.floor_ms),
                )
                if self.persist_new:
                    # Fix "now" at the first start: a restart must not move it forward.
                    store.save(feed.name, state)
            elif state.cursor != feed.cursor:
                path = getattr(store, "path", None)
                where = str(path(feed.name)) if callable(path) else feed.name
                raise StateError(
                    where,
                    f"this state follows the {state.cursor!r} cursor but the configuration "
                    f"says {feed.cursor!r}; the watermarks are not comparable. Use "
                    f"`atomsync watermark {feed.name} --set TIME` to restart it deliberately",
                )
            self.states[feed.name] = state

    # ------------------------------------------------------------------ cycles

    def options(self, sweep: bool) -> CycleOptions:
        poll = self.cfg.poll
        return CycleOptions(
            page_size=self.cfg.hcm.page_size,
            overlap_ms=int(poll.overlap_seconds * 1000),
            retention_ms=int(self.cfg.state.retention_seconds * 1000),
            on_permanent_failure=self.cfg.publisher.on_permanent_failure,
            lookback_ms=int(poll.sweep_lookback_seconds * 1000) if sweep else None,
        )

    def sweep_due(self, now: float, allow: bool = True) -> bool:
        interval = self.cfg.poll.sweep_interval_seconds
        if not allow or interval <= 0 or now < self.next_sweep:
            return False
        self.next_sweep = now + interval
        return True

    def cycle(self, *, allow_sweep: bool = True, force_all: bool = False) -> list[CycleResult]:
        """One cycle over every feed that is not backing off."""
        now = time.monotonic()
        if self.sweep_due(now, allow_sweep):
            self.sweep_pending = {f.name for f in self.cfg.feeds}
        due = [f for f in self.cfg.feeds if force_all or self.backoff[f.name].ready(now)]

        def one(feed: FeedConfig) -> CycleResult:
            result = self.run_feed(feed, feed.name in self.sweep_pending)
            self.took[feed.name] = result.duration_s
            if result.sweep and result.ok:
                self.sweep_pending.discard(feed.name)
            return result

        workers = min(self.cfg.hcm.max_connections, len(due))
        if workers > 1:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(
                    self.cfg.hcm.max_connections, thread_name_prefix="atomsync-feed"
                )
            # Slowest first, by each feed's last cycle: the longest feed then starts at once
            # instead of waiting for a connection behind quicker ones, and the cycle ends
            # closer to max(slowest feed, total / connections).
            order = sorted(due, key=lambda f: -self.took.get(f.name, 0.0))
            futures = {f.name: self.pool.submit(one, f) for f in order}
            results = [futures[f.name].result() for f in due]
        else:
            results = [one(f) for f in due]
        self.cycles += 1
        self.beat()
        if self.parts.metrics is not None:
            self.parts.metrics.write_textfile()
        return results

    def beat(self, force: bool = False) -> None:
        """Rewrite status.json after a cycle, but at most every HEARTBEAT_SECONDS: on a
        sub-second schedule the atomic rewrite would be a fifth of an idle cycle's cost."""
        beat = self.parts.heartbeat
        if beat is None:
            return
        now = time.monotonic()
        if not force and now - self.last_beat < HEARTBEAT_SECONDS:
            self.beat_pending = True
            return
        self.last_beat, self.beat_pending = now, False
        try:
            beat.write(self.parts.clock.now_ms())
        except OSError as exc:
            log.warning("cannot write %s: %s", beat.path, exc.strerror)

    def run_feed(self, feed: FeedConfig, sweep: bool) -> CycleResult:
        parts = self.parts
        started = parts.clock.now_ms()
        try:
            result = run_cycle(
                feed,
                self.states[feed.name],
                source=parts.source,
                sink=parts.sink,
                store=parts.store,
                clock=parts.clock,
                opts=self.options(sweep),
                dead_letters=parts.dead_letters,
                should_stop=self.should_stop,
                observer=parts.observer,
            )
        except Exception as exc:  # a bug must fail one cycle, never the daemon
            log.exception("%s: internal error in the cycle", feed.name)
            result = CycleResult(feed.name, sweep=sweep, error=exc)
        self.account(feed, result, started)
        return result

    def account(self, feed: FeedConfig, result: CycleResult, started_ms: int) -> None:
        """Back-off, heartbeat and the one summary line per feed per cycle."""
        with self.lock:
            backoff = self.backoff[feed.name]
            health = self.parts.heartbeat.feed(feed.name) if self.parts.heartbeat else None
            if health is not None:
                health.last_poll_ms = started_ms
                health.last_cycle = {
                    "fetched": result.fetched,
                    "published": result.published,
                    "skipped": result.skipped,
                    "filtered": result.filtered,
                    "dead_lettered": result.dead_lettered,
                    "pages": result.pages,
                    "duration_seconds": round(result.duration_s, 3),
                    "sweep": result.sweep,
                }
            if result.error is None:
                backoff.succeeded()
                if health is not None and not result.stopped:
                    health.last_success_ms = started_ms
                    health.last_error = None
                    health.consecutive_failures = 0
                self.record_metrics(result, health)
                # Every cycle re-reads its overlap; only cycles that did something are news.
                busy = result.published or result.filtered or result.dead_lettered or result.sweep
                level = logging.INFO if busy else logging.DEBUG
                if log.isEnabledFor(level):  # an idle cycle's summary is rarely wanted
                    summary = self.summary(result)
                    log.log(level, "%s: %s", feed.name, summary, extra={"feed": feed.name})
                return
            retry_after = getattr(result.error, "retry_after", None)
            delay = backoff.failed(time.monotonic(), retry_after)
            cause = describe_error(result.error)
            if health is not None:
                health.last_error = cause
                health.consecutive_failures = backoff.failures
            self.record_metrics(result, health)
            # Set-up problems and a halted feed need a person: errors, not warnings.
            err = result.error
            setup = (
                getattr(err, "kind", "") in _SETUP_KINDS
                or getattr(err, "config_level", False)
                or (isinstance(err, SinkError) and not err.retryable)
            )
            log.log(
                logging.ERROR if setup else logging.WARNING,
                "%s: cycle failed: %s; watermark stays at %s; next try in %.1f s%s",
                feed.name,
                cause,
                format_optional(result.watermark_ms) or "(none)",
                delay,
                f" ({self.summary(result)})" if result.published else "",
                extra={"feed": feed.name, "action": "failed"},
            )

    def record_metrics(self, result: CycleResult, health: Optional[FeedHealth]) -> None:
        if self.parts.metrics is not None:
            self.parts.metrics.cycle(result, health.last_success_ms if health else None)

    @staticmethod
    def summary(result: CycleResult) -> str:
        parts = [
            f"fetched {result.fetched}",
            f"published {result.published}",
            f"skipped {result.skipped}",
        ]
        if result.filtered:
            parts.append(f"filtered {result.filtered}")
        if result.dead_lettered:
            parts.append(f"dead-lettered {result.dead_lettered}")
        text = ", ".join(parts) + f" in {result.duration_s:.2f} s"
        text += f" ({result.pages} page{'s' if result.pages != 1 else ''}"
        text += ", sweep)" if result.sweep else ")"
        return text + f"; watermark {format_optional(result.watermark_ms) or '(none)'}"

    def close(self) -> None:
        if self.beat_pending:
            self.beat(force=True)
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        for closer in (self.parts.sink, self.parts.source):
            close = getattr(closer, "close", None)
            if callable(close):
                close()


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, (FeedError, SinkError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
