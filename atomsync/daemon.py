"""The loop: fixed-rate schedule, signals, sd_notify, prompt and safe shutdown.

Cycles run in a worker thread; the main thread only waits for signals. On SIGTERM/SIGINT
the worker finishes the event in flight (its state is saved before the stop flag is looked
at), and the main thread waits at most `poll.shutdown_timeout_seconds` for it. A worker stuck
in a slow HCM request is then abandoned: every state file on disk is whole (atomic
renames), so nothing is lost; at worst one event in flight is published again next time.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any, Optional

from atomsync.config import Config
from atomsync.deadletter import DeadLetterFile
from atomsync.errors import ConfigError
from atomsync.feed import HcmClient
from atomsync.notify import Notifier
from atomsync.publish import Sink, build_sink, wrap
from atomsync.runner import Runner, RunnerParts
from atomsync.state import FileStore, Lock, ensure_dir
from atomsync.status import Heartbeat
from atomsync.sync import CycleResult, SystemClock
from atomsync.timeutil import format_ms

log = logging.getLogger(__name__)


def next_slot(previous: float, interval: float, now: float) -> float:
    """Fixed rate without drift: the next multiple of `interval` after `previous` that is
    still ahead; slots missed by a long cycle are skipped, not run back to back."""
    slot = previous + interval
    if slot <= now:
        slot += ((now - slot) // interval + 1) * interval
    return slot


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        notifier: Optional[Notifier] = None,
        max_cycles: Optional[int] = None,
        sink: Optional[Sink] = None,
        sweep: bool = True,
    ) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.max_cycles = max_cycles
        self.sweep = sweep
        self.stop_event = threading.Event()
        self.stop_requested = False
        self.failed_cycles = 0
        self.last_results: list[CycleResult] = []
        self.lock = Lock(cfg.state.dir)
        self._sink_override = sink
        self.runner: Optional[Runner] = None
        self.metrics: Optional[Any] = None
        self.last_success_ms: Optional[int] = None  # of a cycle in which no feed failed
        # True when a stop gave up waiting for a request in flight; the caller must then
        # exit at once (os._exit), since interpreter shutdown would join pool threads.
        self.abandoned = False

    # ------------------------------------------------------------------ set-up

    def open(self) -> Runner:
        """Lock, load state, build the sink: everything that can fail with exit 78."""
        ensure_dir(self.cfg.state.dir)
        self.lock.acquire()
        clock = SystemClock()
        store = FileStore(self.cfg.state.dir)
        sink = self._sink_override or build_sink(self.cfg)
        prepare = getattr(sink, "prepare", None)
        if callable(prepare):
            prepare()
        parts = RunnerParts(
            source=HcmClient(self.cfg.hcm),
            sink=wrap(sink, self.cfg, self.sleep),
            store=store,
            clock=clock,
            dead_letters=DeadLetterFile(self.cfg.state.dir),
            heartbeat=Heartbeat(self.cfg.state.dir, os.getpid(), clock.now_ms()),
        )
        runner = Runner(self.cfg, parts, should_stop=self.should_stop)
        runner.load_states()
        if self.cfg.metrics.listen or self.cfg.metrics.textfile:
            from atomsync.metrics import Metrics

            metrics = Metrics(
                self.cfg.metrics,
                [f.name for f in self.cfg.feeds],
                lambda feed: runner.states[feed].watermark_ms,
            )
            try:
                metrics.start()
            except OSError as exc:
                raise ConfigError(
                    "metrics.listen", f"cannot listen on {self.cfg.metrics.listen}: {exc.strerror}"
                ) from None
            parts.observer = parts.metrics = self.metrics = metrics
        self.runner = runner
        return runner

    # ------------------------------------------------------------------ stop handling

    def should_stop(self) -> bool:
        # Called between pages and events: the natural place to prove liveness too.
        self.notifier.watchdog()
        return self.stop_event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop; pings the watchdog along the way."""
        return self.sleep_until(time.monotonic() + seconds)

    def sleep_until(self, deadline: float) -> bool:
        slice_ = self.notifier.watchdog_interval
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return not self.stop_event.is_set()
            if self.stop_event.wait(min(remaining, slice_ / 2) if slice_ else remaining):
                return False
            self.notifier.watchdog()

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        # Only set a flag: Event.set() from a handler can deadlock (CPython #126434).
        self.stop_requested = True
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # 2nd Ctrl-C: now

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until stopped (or `max_cycles`); returns the number of failed cycles."""
        runner = self.runner or self.open()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        self.notifier.ready("started; first cycle running")
        worker = threading.Thread(target=self._loop, args=(runner,), name="atomsync-cycle")
        worker.daemon = True
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.25)
                if self.stop_requested and not self.stop_event.is_set():
                    log.info("stopping: finishing the event in flight")
                    self.notifier.stopping()
                    self.stop_event.set()
                    worker.join(self.cfg.poll.shutdown_timeout_seconds)
                    if worker.is_alive():
                        self.abandoned = True
                        log.warning(
                            "stopping without waiting any longer (%g s) for a request in "
                            "flight; its event, if any, will be published again next start",
                            self.cfg.poll.shutdown_timeout_seconds,
                        )
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not self.abandoned:
            runner.close()
        if self.metrics is not None:
            self.metrics.close()
        self.lock.release()
        if self.stop_requested:
            log.info("stopped")
        return self.failed_cycles

    def _loop(self, runner: Runner) -> None:
        interval = self.cfg.poll.interval_seconds
        slot = time.monotonic()
        done = 0
        while not self.stop_event.is_set():
            try:
                results = runner.cycle(allow_sweep=self.sweep)
            except Exception:  # never let the loop die of a bug in one cycle
                log.exception("internal error in the cycle loop")
                results = []
                self.failed_cycles += 1
            self.last_results = results
            if any(r.error is not None for r in results):
                self.failed_cycles += 1
            self.report(results)
            done += 1
            if self.max_cycles is not None and done >= self.max_cycles:
                return
            slot = next_slot(slot, interval, time.monotonic())
            if not self.sleep_until(slot):
                return

    def report(self, results: list[CycleResult]) -> None:
        runner = self.runner
        if runner is None or not self.notifier.enabled:
            return  # the status line is for systemd only
        now = time.time_ns() // 1_000_000
        published = sum(s.published for s in runner.states.values())
        failed = [r.feed for r in results if r.error is not None]
        if not failed:
            self.last_success_ms = now
        marks = [s.watermark_ms for s in runner.states.values() if s.watermark_ms is not None]
        lag = f"; lag {(now - min(marks)) / 1000:.0f}s" if marks else ""
        head = f"failing: {', '.join(failed)}" if failed else "ok"
        since = format_ms(self.last_success_ms) if self.last_success_ms else "never"
        self.notifier.status(f"{head}; last success {since}; {published} published{lag}")
        self.notifier.watchdog(force=True)
