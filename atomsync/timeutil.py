"""Timestamps as integer milliseconds since the epoch, UTC.

HCM stamps entries with millisecond precision (`2024-03-04T09:15:22.000Z`). Keeping the
watermark as an integer number of milliseconds makes comparisons exact and the wire format
round-trip without drift; floats and feedparser's `*_parsed` tuples (whole seconds) would not.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# The forms HCM sends (`2024-03-04T09:15:22.000Z`, and the same with an offset or without
# milliseconds), read here directly; anything else goes to dateutil, imported only then, so
# that `status` and friends start without it.
_COMMON = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
    r"(?:(Z)|([+-])(\d\d):?(\d\d))?\Z"
)


def parse_timestamp(raw: str) -> int:
    """Parse an ISO 8601 timestamp into epoch milliseconds (UTC).

    A timestamp without a zone is taken as UTC, which is what HCM always sends. Digits below
    the millisecond are dropped (floored), never rounded up past a value HCM could have sent.
    Raises ValueError for anything that is not ISO 8601.
    """
    text = raw.strip()
    if not text:
        raise ValueError("empty timestamp")
    m = _COMMON.match(text)
    if m is not None:
        try:
            return _common_ms(m)
        except (ValueError, OverflowError):
            pass  # e.g. 24:00 or a day out of range: dateutil has the last word
    from dateutil.parser import isoparse

    return datetime_to_ms(isoparse(text))


def _common_ms(m: re.Match[str]) -> int:
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zulu, sign, off_h, off_m = m.groups()[6:]
    ms = int((fraction or "0")[:3].ljust(3, "0"))  # floored to the millisecond
    tz = timezone.utc
    if sign is not None and not zulu:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
    dt = datetime(year, month, day, hour, minute, second, ms * 1000, tzinfo=tz)
    return datetime_to_ms(dt)


def datetime_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def format_ms(ms: int) -> str:
    """The form HCM sends and accepts: UTC, milliseconds, `Z`."""
    dt = ms_to_datetime(ms)
    # Not strftime("%Y"): it writes year 999 as "999", which is not ISO 8601.
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def format_optional(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)
