"""In-memory twins for driving the sync protocol without a network."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from atomsync.atom import Entry
from atomsync.config import FeedConfig
from atomsync.feed import Window
from atomsync.message import Message
from atomsync.publish import SinkError


def entry(entry_id: str, updated_ms: int, published_ms: Optional[int] = None, **ctx: str) -> Entry:
    context = [dict(ctx)] if ctx else [{"PersonName": "Roe, Jane", "PersonNumber": "10457"}]
    return Entry(
        id=entry_id,
        updated_ms=updated_ms,
        published_ms=published_ms if published_ms is not None else updated_ms,
        title=f"{entry_id} Hired",
        summary="Employee Period of Service Created",
        author="HR.SPECIALIST",
        context=context,
    )


class FakeHcm:
    """HCM's query semantics: `-min` exclusive, `-max` inclusive, ascending, offset pages.

    Ties are served newest-inserted first, deliberately not in id order. `before_page` runs
    before each page is computed, so a test can make entries appear between page requests.
    """

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.before_page: Optional[Callable[[int], None]] = None
        self.requests: list[tuple[Optional[int], int, int, int]] = []
        self.fail_next: list[Exception] = []

    def add(self, *entries: Entry) -> None:
        self.entries.extend(entries)

    def fetch_page(
        self, feed: FeedConfig, window: Window, page: int, page_size: Optional[int] = None
    ) -> list[Entry]:
        size = page_size or 10
        if self.before_page is not None:
            self.before_page(page)
        self.requests.append((window.min_ms, window.max_ms, page, size))
        if self.fail_next:
            raise self.fail_next.pop(0)
        cur = window.cursor

        def value(e: Entry) -> int:
            return e.cursor_ms(cur)

        visible = [
            (i, e)
            for i, e in enumerate(self.entries)
            if (window.min_ms is None or value(e) > window.min_ms) and value(e) <= window.max_ms
        ]
        visible.sort(key=lambda p: (value(p[1]), -p[0]))
        start = (page - 1) * size
        return [e for _, e in visible[start : start + size]]


@dataclass
class RecordingSink:
    name: str = "recording"
    max_request_bytes: Optional[int] = 60_000
    accepted: list[Message] = field(default_factory=list)
    # Called before accepting; may raise (SinkError, or a crash) to model failures.
    before: Optional[Callable[[Message], None]] = None
    after: Optional[Callable[[Message], None]] = None

    def publish(self, message: Message) -> str:
        if self.before is not None:
            self.before(message)
        self.accepted.append(message)
        if self.after is not None:
            self.after(message)
        return f"m{len(self.accepted)}"

    def close(self) -> None:
        pass

    def ids(self) -> list[str]:
        return [m.entry_id for m in self.accepted]


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


class Crash(BaseException):
    """A process death: not an Exception, so nothing in atomsync catches it."""


def failing(exc: SinkError) -> Callable[[Message], None]:
    def raise_(message: Message) -> None:
        raise exc

    return raise_
