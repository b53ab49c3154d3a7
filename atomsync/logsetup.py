"""Logging set-up: readable text, journald-aware, or one JSON object per line.

Only the CLI calls `configure`; modules log through `logging.getLogger(__name__)`. Every
handler gets a redacting formatter, so no secret from the configuration reaches a log line,
not even through an exception message or a library's debug output.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Optional, TextIO

# journald's syslog priorities, written as "<N>" at the start of every line.
_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
_EXTRA = ("feed", "entry_id", "action", "cycle")


def under_journald(env: Mapping[str, str], stream: Optional[TextIO] = None) -> bool:
    """True when stderr *is* the journal stream systemd set up (children inherit the
    variable, so it must match the descriptor, not merely exist)."""
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def _json_escaped(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _json_ascii_escaped(text: str) -> str:
    return json.dumps(text)[1:-1]


def _repr_escaped(text: str) -> str:
    return repr(text)[1:-1]


_ESCAPES = (_json_escaped, _json_ascii_escaped, _repr_escaped)


class _Redacting(logging.Formatter):
    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        # Each secret also as JSON lines and Python reprs write it, and as one inside the
        # other (a repr in a JSON line): a password holding `"`, `\` or a control character
        # appears escaped there, never as itself. Longest first, so a secret containing
        # another is masked whole.
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= 4:
                once = {secret} | {escape(secret) for escape in _ESCAPES}
                forms |= once | {escape(form) for form in once for escape in _ESCAPES}
        self.secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class TextFormatter(logging.Formatter):
    """`2024-03-04T09:15:22.123Z INFO atomsync.sync: message` (UTC, milliseconds)."""

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
            f".{int(record.msecs):03d}Z"
        )

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class JournalFormatter(logging.Formatter):
    """No timestamp (journald adds one); a priority prefix on every line, tracebacks too."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        prefix = f"<{_PRIORITY.get(record.levelname, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    def __init__(self, journald: bool = False) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _EXTRA:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        line = json.dumps(doc, ensure_ascii=False)
        return f"<{_PRIORITY.get(record.levelname, 6)}>{line}" if self.journald else line


def configure(
    level: str = "INFO",
    fmt: str = "text",
    file: Optional[str] = None,
    secrets: Iterable[str] = (),
    env: Optional[Mapping[str, str]] = None,
    stream: Optional[TextIO] = None,
) -> None:
    env = os.environ if env is None else env
    if file:
        # WatchedFileHandler reopens the file when logrotate moves it away: no signal needed.
        handler: logging.Handler = logging.handlers.WatchedFileHandler(file, encoding="utf-8")
        journald = False
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        journald = under_journald(env, stream)
    inner: logging.Formatter
    if fmt == "json":
        inner = JsonFormatter(journald)
    elif journald:
        inner = JournalFormatter()
    else:
        inner = TextFormatter()
    handler.setFormatter(_Redacting(inner, secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries' chatter only when asked for, and never their request dumps by default.
    for noisy in ("urllib3", "oci", "requests"):
        logging.getLogger(noisy).setLevel(level if level == "DEBUG" else "WARNING")
