"""The dead-letter file: events a sink rejected for good, kept for inspection and re-sending.

One JSON object per line in `deadletter.jsonl` in the state directory, appended and fsynced
before the feed moves past the event, so a rejected event is never silently gone.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from atomsync.errors import StateError
from atomsync.state import fsync_dir, write_atomic
from atomsync.timeutil import format_ms

if TYPE_CHECKING:  # `status` counts dead letters; it needs neither messages nor logging
    from atomsync.config import Config
    from atomsync.message import Message

FILE_NAME = "deadletter.jsonl"


@dataclass(frozen=True)
class DeadLetter:
    feed: str
    entry_id: str
    key: str
    cursor: str  # the entry's cursor value, ISO 8601
    reason: str
    at: str  # when it was rejected
    title: str
    body: dict[str, Any]
    topic_id: Optional[str] = None

    def message(self) -> Message:
        from atomsync.message import Message

        return Message(self.feed, self.entry_id, self.key, self.title, self.body, self.topic_id)

    def to_json(self) -> str:
        return json.dumps(
            {
                "feed": self.feed,
                "id": self.entry_id,
                "key": self.key,
                "cursor": self.cursor,
                "reason": self.reason,
                "at": self.at,
                "title": self.title,
                "body": self.body,
                "topic_id": self.topic_id,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )


class DeadLetterFile:
    def __init__(self, directory: Path, clock_ms: Any = None) -> None:
        self.path = directory / FILE_NAME
        self._now = clock_ms
        self._lock = threading.Lock()  # feeds run in threads; keep lines whole

    def add(self, msg: Message, cursor_ms: int, reason: str) -> None:
        now = self._now() if self._now else _wall_ms()
        letter = DeadLetter(
            msg.feed,
            msg.entry_id,
            msg.key,
            format_ms(cursor_ms),
            reason,
            format_ms(now),
            msg.title,
            msg.body,
            msg.topic_id,
        )
        line = (letter.to_json() + "\n").encode("utf-8")
        with self._lock:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(line)
                while view:  # os.write may take fewer bytes than it was given
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # a new file's name is durable only once its directory is synced
                fsync_dir(self.path.parent)

    def __iter__(self) -> Iterator[DeadLetter]:
        """Stream the file (it may be large); a damaged line is a StateError naming it."""
        try:
            fh = open(self.path, encoding="utf-8")  # noqa: SIM115 - generator owns it
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError(str(self.path), f"cannot read: {exc.strerror}") from None
        with fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                    yield DeadLetter(
                        doc["feed"],
                        doc["id"],
                        doc["key"],
                        doc["cursor"],
                        doc["reason"],
                        doc["at"],
                        doc["title"],
                        doc["body"],
                        doc.get("topic_id"),
                    )
                except (ValueError, KeyError, TypeError):
                    raise StateError(
                        str(self.path), f"line {number} is not a dead-letter record"
                    ) from None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for letter in self:
            out[letter.feed] = out.get(letter.feed, 0) + 1
        return out

    def replace(self, letters: list[DeadLetter]) -> None:
        """Rewrite the file with what is left (after a retry), atomically."""
        data = "".join(letter.to_json() + "\n" for letter in letters).encode("utf-8")
        write_atomic(self.path, data)


def _wall_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def retry(cfg: Config, letters: DeadLetterFile, feed: Optional[str] = None) -> tuple[int, int]:
    """Re-send dead letters (optionally one feed's); keep those still refused.

    Takes the state lock: the daemon appends to the file, so it must not run meanwhile.
    Returns (re-sent, still dead-lettered).
    """
    import logging

    from atomsync.message import MessageTooLarge, fit
    from atomsync.publish import SinkError, build_sink, wrap
    from atomsync.state import Lock

    log = logging.getLogger(__name__)
    with Lock(letters.path.parent):
        pending = list(letters)
        sink = wrap(build_sink(cfg), cfg, _sleep)
        keep: list[DeadLetter] = []
        sent = tried = 0
        try:
            for letter in pending:
                if feed is not None and letter.feed != feed:
                    keep.append(letter)
                else:
                    try:
                        msg = letter.message()
                        if sink.max_request_bytes:
                            msg = fit(msg, sink.max_request_bytes)
                        sink.publish(msg)
                    except (SinkError, MessageTooLarge) as exc:
                        log.warning("%s: %s still refused: %s", letter.feed, letter.entry_id, exc)
                        keep.append(letter)
                    else:
                        sent += 1
                        log.info("%s: re-sent %s", letter.feed, letter.entry_id)
                tried += 1
        finally:
            # Letters not tried (a set-up error, an interrupt) stay exactly as they were.
            letters.replace(keep + pending[tried:])
            sink.close()
        left = sum(1 for k in keep if feed is None or k.feed == feed)
        return sent, left


def _sleep(seconds: float) -> bool:
    import time

    time.sleep(seconds)
    return True
