"""Small helpers shared by the HCM client and the sinks for reading HTTP failures.

Messages built from these never contain a URL's path, query or user-info, nor a header:
only host:port and the operating system's own words ("Connection refused").
"""

from __future__ import annotations

import math
import socket
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Optional
from urllib.parse import urlsplit

from urllib3.exceptions import NewConnectionError


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are GMT whatever they say
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, outermost first. urllib3 keeps causes in `reason` or the
    last argument rather than in `__cause__`, so those are followed too."""
    out: list[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and all(current is not seen for seen in out) and len(out) < 20:
        out.append(current)
        nxt = current.__cause__ or current.__context__ or getattr(current, "reason", None)
        if not isinstance(nxt, BaseException):
            args = current.args
            nxt = args[-1] if args and isinstance(args[-1], BaseException) else None
        current = nxt
    return out


def os_reason(exc: BaseException) -> str:
    """The innermost cause in a few words, on one line (`Connection refused`)."""
    chain = causes(exc)
    text = ""
    for inner in reversed(chain):
        if isinstance(inner, OSError) and isinstance(inner.strerror, str) and inner.strerror:
            text = inner.strerror
            break
    else:
        for inner in reversed(chain):
            if isinstance(inner, TimeoutError):
                text = "timed out"
                break
    if not text:
        text = str(chain[-1]) or type(chain[-1]).__name__
    text = " ".join(text.split())
    return text if len(text) < 300 else text[:297] + "..."


def never_connected(exc: BaseException) -> bool:
    """True when no connection was made, so the request cannot have been received."""
    return any(
        isinstance(e, (NewConnectionError, ConnectionRefusedError, socket.gaierror))
        for e in causes(exc)
    )


def host_port(url: str) -> str:
    """host:port of a URL, never its path, query or user-info."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host
