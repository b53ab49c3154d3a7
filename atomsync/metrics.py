"""Prometheus metrics: an optional /metrics listener and an optional node_exporter textfile.

Imported only when `metrics.listen` or `metrics.textfile` is set, so the default daemon
carries no exporter. Series (design.md §3):
  atomsync_events_published_total{feed}      atomsync_events_failed_total{feed}
  atomsync_events_deadlettered_total{feed}   atomsync_cycle_duration_seconds{feed}
  atomsync_watermark_lag_seconds{feed}       atomsync_last_success_timestamp_seconds{feed}
plus atomsync_cycles_total{feed,result}, atomsync_errors_total{feed,kind} and
atomsync_build_info{version}.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, start_http_server
from prometheus_client.exposition import write_to_textfile

from atomsync import __version__
from atomsync.config import MetricsConfig
from atomsync.sync import CycleResult

log = logging.getLogger(__name__)


class Metrics:
    def __init__(
        self,
        cfg: MetricsConfig,
        feeds: list[str],
        watermark_of: Callable[[str], Optional[int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.registry = CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "atomsync_events_published", "Events accepted by the sink", ["feed"], registry=r
        )
        self.failed = Counter(
            "atomsync_events_failed",
            "Publish attempts that failed (the event stays pending)",
            ["feed"],
            registry=r,
        )
        self.deadlettered = Counter(
            "atomsync_events_deadlettered",
            "Events the sink rejected for good, written to the dead-letter file",
            ["feed"],
            registry=r,
        )
        self.cycles = Counter(
            "atomsync_cycles", "Cycles run, by result", ["feed", "result"], registry=r
        )
        self.errors = Counter(
            "atomsync_errors", "Failed cycles, by kind of failure", ["feed", "kind"], registry=r
        )
        self.duration = Gauge(
            "atomsync_cycle_duration_seconds", "Duration of the last cycle", ["feed"], registry=r
        )
        lag = Gauge(
            "atomsync_watermark_lag_seconds",
            "Now minus the watermark (grows while a feed is quiet; staleness is last_success)",
            ["feed"],
            registry=r,
        )
        self.last_success = Gauge(
            "atomsync_last_success_timestamp_seconds",
            "When the feed last completed a cycle without error (Unix time)",
            ["feed"],
            registry=r,
        )
        Info("atomsync_build", "atomsync version", registry=r).info({"version": __version__})
        for feed in feeds:
            # Computed at scrape time, so the lag is current between cycles too.
            lag.labels(feed).set_function(_lag(feed, watermark_of, clock))
            for child in (self.published, self.failed, self.deadlettered):
                child.labels(feed)  # present from the start, at 0
        self.server: Optional[object] = None

    def start(self) -> None:
        if self.cfg.listen:
            host, _, port = self.cfg.listen.rpartition(":")
            server, _thread = start_http_server(
                int(port), addr=host or "127.0.0.1", registry=self.registry
            )
            self.server = server
            log.info("serving Prometheus metrics on http://%s/metrics", self.cfg.listen)

    def event(self, feed: str, action: str, entry_id: str) -> None:
        if action == "published":
            self.published.labels(feed).inc()
        elif action == "deadlettered":
            self.deadlettered.labels(feed).inc()

    def cycle(self, result: CycleResult, last_success_ms: Optional[int]) -> None:
        feed = result.feed
        self.duration.labels(feed).set(result.duration_s)
        if result.error is None:
            self.cycles.labels(feed, "stopped" if result.stopped else "ok").inc()
        else:
            self.cycles.labels(feed, "failed").inc()
            self.errors.labels(feed, getattr(result.error, "kind", "internal")).inc()
        self.failed.labels(feed).inc(len(result.failed_ids) - result.dead_lettered)
        if last_success_ms is not None:
            self.last_success.labels(feed).set(last_success_ms / 1000)

    def write_textfile(self) -> None:
        if self.cfg.textfile:
            try:
                write_to_textfile(self.cfg.textfile, self.registry)  # temp file + rename
            except OSError as exc:
                log.warning("cannot write %s: %s", self.cfg.textfile, exc.strerror)

    def close(self) -> None:
        shutdown = getattr(self.server, "shutdown", None)
        if callable(shutdown):
            shutdown()


def _lag(
    feed: str, watermark_of: Callable[[str], Optional[int]], clock: Callable[[], float]
) -> Callable[[], float]:
    def lag() -> float:
        mark = watermark_of(feed)
        return float("nan") if mark is None else max(0.0, clock() - mark / 1000)

    return lag
