"""The heartbeat file and the `status` / `health` reports built from it.

`status.json` beside the state holds what changes every cycle (last poll, last success, last
error). It is written atomically but without fsync, and kept apart from the watermark files
so that rewriting it every 30 s never puts the watermark at risk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from atomsync.config import Config
from atomsync.errors import StateError
from atomsync.state import LOCK_NAME, FileStore, write_atomic
from atomsync.timeutil import format_optional, parse_timestamp

FILE_NAME = "status.json"


@dataclass
class FeedHealth:
    last_poll_ms: Optional[int] = None
    last_success_ms: Optional[int] = None
    last_error: Optional[str] = None
    consecutive_failures: int = 0
    last_cycle: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "last_poll": format_optional(self.last_poll_ms),
            "last_success": format_optional(self.last_success_ms),
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "last_cycle": self.last_cycle,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FeedHealth:
        def ms(name: str) -> Optional[int]:
            value = doc.get(name)
            try:
                return parse_timestamp(value) if isinstance(value, str) else None
            except ValueError:
                return None

        return cls(
            ms("last_poll"),
            ms("last_success"),
            doc.get("last_error"),
            int(doc.get("consecutive_failures") or 0),
            doc.get("last_cycle") or {},
        )


class Heartbeat:
    def __init__(self, directory: Path, pid: int, started_ms: int) -> None:
        self.path = directory / FILE_NAME
        self.pid = pid
        self.started_ms = started_ms
        self.feeds: dict[str, FeedHealth] = {}
        previous = read(directory)  # keep last_success across restarts
        for name, doc in (previous.get("feeds") or {}).items():
            if isinstance(doc, dict):
                self.feeds[name] = FeedHealth.from_json(doc)

    def feed(self, name: str) -> FeedHealth:
        return self.feeds.setdefault(name, FeedHealth())

    def write(self, now_ms: int) -> None:
        doc = {
            "pid": self.pid,
            "started": format_optional(self.started_ms),
            "written": format_optional(now_ms),
            "feeds": {name: h.to_json() for name, h in sorted(self.feeds.items())},
        }
        write_atomic(self.path, json.dumps(doc, indent=1).encode(), durable=False)


def read(directory: Path) -> dict[str, Any]:
    """The heartbeat document, or {} when there is none yet (or it is unreadable: it is
    advisory, unlike the watermark)."""
    try:
        doc = json.loads((directory / FILE_NAME).read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def running_pid(directory: Path) -> Optional[int]:
    """The pid in the lock file if that process is alive (advisory: no lock is taken)."""
    try:
        text = (directory / LOCK_NAME).read_text().strip()
        pid = int(text)
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def report(cfg: Config, now_ms: int) -> dict[str, Any]:
    """The `status --json` document (design.md §3), plus a few more keys."""
    from atomsync.deadletter import DeadLetterFile  # not for `health`, which runs often

    directory = cfg.state.dir
    beat = read(directory)
    beats = beat.get("feeds") or {}
    store = FileStore(directory)
    try:
        dead = DeadLetterFile(directory).counts()
    except StateError:
        dead = {}
    feeds: dict[str, Any] = {}
    for feed in cfg.feeds:
        state = store.load(feed.name)
        health = FeedHealth.from_json(beats.get(feed.name) or {})
        watermark = state.watermark_ms if state else None
        feeds[feed.name] = {
            "watermark": format_optional(watermark),
            "last_poll": format_optional(health.last_poll_ms),
            "last_success": format_optional(health.last_success_ms),
            "published": state.published if state else 0,
            "dead_letters": dead.get(feed.name, 0),
            "last_error": health.last_error,
            "consecutive_failures": health.consecutive_failures,
            "cursor": state.cursor if state else feed.cursor,
            "lag_seconds": round((now_ms - watermark) / 1000, 3) if watermark else None,
            "keys_retained": len(state.keys) if state else 0,
            "last_cycle": health.last_cycle,
        }
    return {
        "feeds": feeds,
        "daemon": {"pid": running_pid(directory), "started": beat.get("started")},
        "state_dir": str(directory),
    }


def health(cfg: Config, now_ms: int, max_age_s: float) -> tuple[bool, list[str]]:
    """(healthy, one reason per unhealthy feed), from the heartbeat file."""
    beats = read(cfg.state.dir).get("feeds") or {}
    problems = []
    for feed in cfg.feeds:
        h = FeedHealth.from_json(beats.get(feed.name) or {})
        if h.last_success_ms is not None and now_ms - h.last_success_ms <= max_age_s * 1000:
            continue
        if h.last_poll_ms is None:
            problems.append(f"{feed.name}: never polled")
        elif now_ms - h.last_poll_ms > max_age_s * 1000:
            problems.append(f"{feed.name}: attempts stale (is atomsync running?)")
        else:
            why = f": {h.last_error}" if h.last_error else ""
            problems.append(f"{feed.name}: success stale, attempts recent{why}")
    return not problems, problems
