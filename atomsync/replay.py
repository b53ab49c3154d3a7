"""`atomsync replay`: re-publish a window of one feed without touching its live state.

The window is read by the same cycle code as the daemon's, but against a throwaway
in-memory state whose floor is the start of the window, so the live watermark, keys and
counters on disk never change. No lock is taken: a replay can run beside the daemon (both
pace themselves, so together they may exceed a topic's rate; 429s are retried).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any, Optional

from atomsync.config import Config
from atomsync.deadletter import DeadLetterFile
from atomsync.feed import HcmClient
from atomsync.publish import Sink, wrap
from atomsync.state import FeedState, MemoryStore
from atomsync.sync import CycleOptions, CycleResult, SystemClock, run_cycle
from atomsync.timeutil import format_ms

log = logging.getLogger(__name__)


class _Progress:
    """A tqdm counter on a terminal; a log line every 100 events otherwise."""

    def __init__(self, feed: str, interactive: bool) -> None:
        self.feed = feed
        self.count = 0
        self.bar: Any = None
        if interactive:
            from tqdm import tqdm

            self.bar = tqdm(desc=f"replay {feed}", unit=" events", file=sys.stderr)

    def event(self, feed: str, action: str, entry_id: str) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.count % 100 == 0:
            log.info("%s: replay: %d events so far", feed, self.count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def replay(
    cfg: Config,
    feed_name: str,
    since_ms: int,
    until_ms: Optional[int],
    sink: Sink,
    *,
    dead_letters: bool = True,
    interactive: Optional[bool] = None,
) -> CycleResult:
    """Re-publish entries with since <= cursor <= until (until: now)."""
    feed = cfg.feed(feed_name)
    clock = SystemClock()
    until = until_ms if until_ms is not None else clock.now_ms()
    # `-min` is exclusive: one millisecond earlier makes `since` itself part of the window.
    state = FeedState(feed.cursor, floor_ms=since_ms - 1)
    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()  # a plain flag read between events; nothing else runs in this process

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    progress = _Progress(feed.name, sys.stderr.isatty() if interactive is None else interactive)
    source = HcmClient(cfg.hcm)
    paced = wrap(sink, cfg, lambda seconds: not stop.wait(seconds))
    try:
        result = run_cycle(
            feed,
            state,
            source=source,
            sink=paced,
            store=MemoryStore(),
            clock=clock,
            opts=CycleOptions(
                page_size=cfg.hcm.page_size,
                overlap_ms=0,
                retention_ms=max(0, until - since_ms) + 1,
                on_permanent_failure=cfg.publisher.on_permanent_failure,
                max_ms=until,
            ),
            dead_letters=DeadLetterFile(cfg.state.dir) if dead_letters else None,
            should_stop=stop.is_set,
            observer=progress,
        )
    finally:
        progress.close()
        source.close()
        paced.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    window = f"{format_ms(since_ms)} .. {format_ms(until)}"
    if result.error is not None:
        log.error("%s: replay of %s failed: %s", feed.name, window, result.error)
    elif result.stopped:
        log.warning("%s: replay of %s stopped early", feed.name, window)
    log.info(
        "%s: replayed %d events of %s (%d filtered, %d dead-lettered)",
        feed.name,
        result.published,
        window,
        result.filtered,
        result.dead_lettered,
    )
    return result
