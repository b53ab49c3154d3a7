"""The watermark store: per-feed state, durable writes, the single-writer lock.

Per feed: the cursor field, the watermark W (largest cursor value processed, ms UTC), an
optional floor (nothing at or before it is ever published: `start_at`, `watermark --set`),
and the keys processed within the retention window behind W. Every save is a temp file,
fsync, atomic rename and fsync of the directory, so a crash leaves either the old or the new
state, never a torn one. Anything unreadable or inconsistent is a StateError (exit 78):
a silent restart from "now" or "the beginning" would lose or repeat events.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from atomsync.errors import LockHeldError, StateError
from atomsync.timeutil import format_ms, format_optional, parse_timestamp

SCHEMA_VERSION = 1
LOCK_NAME = "atomsync.lock"
TMP_PREFIX = ".state."


@dataclass
class FeedState:
    cursor: str
    watermark_ms: Optional[int] = None
    floor_ms: Optional[int] = None
    keys: dict[str, int] = field(default_factory=dict)  # event key -> cursor ms
    published: int = 0
    dead_letters: int = 0
    last_published_ms: Optional[int] = None  # wall time of the last accepted publish
    # (horizon, key count) after the last prune: while neither changes there is nothing to
    # prune, and an idle cycle need not walk every retained key to find that out.
    _pruned: Optional[tuple[int, int]] = field(default=None, init=False, repr=False, compare=False)

    def seen(self, key: str) -> bool:
        return key in self.keys

    def record(self, key: str, cursor_ms: int) -> None:
        self.keys[key] = cursor_ms
        if self.watermark_ms is None or cursor_ms > self.watermark_ms:
            self.watermark_ms = cursor_ms

    def prune(self, retention_ms: int) -> int:
        """Forget keys too far behind W to be read again; returns how many went."""
        if self.watermark_ms is None:
            return 0
        horizon = self.watermark_ms - retention_ms
        if self._pruned == (horizon, len(self.keys)):
            return 0
        old = [k for k, c in self.keys.items() if c < horizon]
        for k in old:
            del self.keys[k]
        self._pruned = (horizon, len(self.keys))
        return len(old)

    def copy(self) -> FeedState:
        return FeedState(
            self.cursor,
            self.watermark_ms,
            self.floor_ms,
            dict(self.keys),
            self.published,
            self.dead_letters,
            self.last_published_ms,
        )


class Store(Protocol):
    def load(self, feed: str) -> Optional[FeedState]: ...

    def save(self, feed: str, state: FeedState) -> None: ...


class MemoryStore:
    """The in-memory twin of FileStore, for tests and dry runs."""

    def __init__(self) -> None:
        self.states: dict[str, FeedState] = {}
        self.saves = 0

    def load(self, feed: str) -> Optional[FeedState]:
        state = self.states.get(feed)
        return state.copy() if state else None

    def save(self, feed: str, state: FeedState) -> None:
        self.states[feed] = state.copy()
        self.saves += 1


# --------------------------------------------------------------------------- encoding


def encode(feed: str, state: FeedState) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "feed": feed,
        "cursor": state.cursor,
        "watermark": format_optional(state.watermark_ms),
        "floor": format_optional(state.floor_ms),
        "published": state.published,
        "dead_letters": state.dead_letters,
        "last_published": format_optional(state.last_published_ms),
        # Keys already carry their cursor value ("<id>@<timestamp>").
        "keys": sorted(state.keys, key=lambda k: (state.keys[k], k)),
    }


def decode(path: str, doc: Any) -> FeedState:
    """Validate a state document; any doubt is a StateError naming the file."""

    def bad(why: str) -> StateError:
        return StateError(path, f"inconsistent state ({why}); refusing to guess where to resume")

    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StateError(
            path,
            f"schema_version {version!r} is not one this atomsync understands ({SCHEMA_VERSION})",
        )
    cursor = doc.get("cursor")
    if cursor not in ("updated", "published"):
        raise bad(f"cursor {cursor!r}")

    def stamp(name: str) -> Optional[int]:
        value = doc.get(name)
        if value is None:
            return None
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return parse_timestamp(value)
        except (ValueError, OverflowError):
            raise bad(f"{name} {value!r} is not a timestamp") from None

    def count(name: str) -> int:
        value = doc.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"{name} {value!r}")
        return value

    state = FeedState(
        cursor=cursor,
        watermark_ms=stamp("watermark"),
        floor_ms=stamp("floor"),
        published=count("published"),
        dead_letters=count("dead_letters"),
        last_published_ms=stamp("last_published"),
    )
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise bad("keys is not a list")
    for key in keys:
        entry_id, sep, when = key.rpartition("@") if isinstance(key, str) else ("", "", "")
        if not sep or not entry_id:
            raise bad(f"key {key!r}")
        try:
            cursor_ms = parse_timestamp(when)
        except (ValueError, OverflowError):
            raise bad(f"key {key!r}") from None
        if state.watermark_ms is None or cursor_ms > state.watermark_ms:
            raise bad(f"key {key!r} lies beyond the watermark")
        state.keys[key] = cursor_ms
    return state


# --------------------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` so that readers and crashes see old or new, never half.

    `durable` adds the fsyncs that make the new content survive a power cut; status files
    that are rewritten every cycle skip them.
    """
    import tempfile  # not at import time: read-only commands never write

    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class FileStore:
    """One JSON file per feed in the state directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, feed: str) -> Path:
        return self.dir / f"{feed}.state.json"

    def load(self, feed: str) -> Optional[FeedState]:
        path = self.path(feed)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(str(path), f"cannot read state: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StateError(
                str(path), "state file is not valid JSON; refusing to guess where to resume"
            ) from None
        return decode(str(path), doc)

    def save(self, feed: str, state: FeedState) -> None:
        data = json.dumps(encode(feed, state), separators=(",", ":")).encode()
        write_atomic(self.path(feed), data)


# --------------------------------------------------------------------------- directory + lock


def ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(str(directory), f"cannot create state directory: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateError(str(directory), "state directory is not writable by this user")


class Lock:
    """flock on a dedicated file, held for the life of the process (dies with it, even -9).

    Never the state file itself: os.replace swaps its inode, and the lock with it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(str(self.path), f"cannot open lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeldError(str(self.path), holder) from None
            raise StateError(str(self.path), f"cannot lock: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        clean_temp_files(self.path.parent)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def clean_temp_files(directory: Path) -> None:
    """Temp files left by a crash mid-write; safe to delete only while holding the lock."""
    for leftover in directory.glob(f"{TMP_PREFIX}*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def initial_state(cursor: str, start_kind: str, start_ms: Optional[int], now_ms: int) -> FeedState:
    """State for a feed seen for the first time: nothing at or before the start is published."""
    if start_kind == "beginning":
        return FeedState(cursor)
    at = now_ms if start_kind == "now" else start_ms
    return FeedState(cursor, watermark_ms=at, floor_ms=at)


def describe(state: Optional[FeedState]) -> str:
    if state is None or state.watermark_ms is None:
        return "no watermark yet"
    return format_ms(state.watermark_ms)
