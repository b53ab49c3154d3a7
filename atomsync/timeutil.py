"""Timestamps as integer milliseconds since the epoch, UTC.

HCM stamps entries with millisecond precision (`2024-03-04T09:15:22.000Z`). Keeping the
watermark as an integer number of milliseconds makes comparisons exact and the wire format
round-trip without drift; floats and feedparser's `*_parsed` tuples (whole seconds) would not.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dateutil.parser import isoparse

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_timestamp(raw: str) -> int:
    """Parse an ISO 8601 timestamp into epoch milliseconds (UTC).

    A timestamp without a zone is taken as UTC, which is what HCM always sends. Digits below
    the millisecond are dropped (floored), never rounded up past a value HCM could have sent.
    Raises ValueError for anything that is not ISO 8601.
    """
    text = raw.strip()
    if not text:
        raise ValueError("empty timestamp")
    dt = isoparse(text)
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
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_optional(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)
