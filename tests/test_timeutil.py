"""Timestamps: the fast path for HCM's own forms agrees with dateutil on everything."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from dateutil.parser import isoparse
from hypothesis import given, settings
from hypothesis import strategies as st

from atomsync.timeutil import datetime_to_ms, format_ms, parse_timestamp


def reference(text: str) -> int:
    return datetime_to_ms(isoparse(text.strip()))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-04T09:15:22.000Z", "2024-03-04T09:15:22.000Z"),
        ("2024-03-04T09:15:22.1239Z", "2024-03-04T09:15:22.123Z"),  # floored, never rounded up
        ("2024-03-04T09:15:22Z", "2024-03-04T09:15:22.000Z"),
        ("2024-03-04T09:15:22", "2024-03-04T09:15:22.000Z"),  # no zone: UTC
        ("2024-03-04T10:15:22+01:00", "2024-03-04T09:15:22.000Z"),
        ("2024-03-04T04:15:22-0500", "2024-03-04T09:15:22.000Z"),
        ("2024-03-04T24:00:00Z", "2024-03-05T00:00:00.000Z"),  # dateutil's reading of 24:00
        ("20240304T091522Z", "2024-03-04T09:15:22.000Z"),  # basic format: via dateutil
        ("0999-12-31T23:59:59.000Z", "0999-12-31T23:59:59.000Z"),
    ],
)
def test_forms(text: str, expected: str) -> None:
    assert format_ms(parse_timestamp(text)) == expected
    assert parse_timestamp(text) == reference(text)


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@settings(max_examples=2000)
@given(
    moment=st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9998, 12, 30)),
    digits=st.integers(0, 9),
    zone=st.sampled_from(["Z", "", "+00:00", "-05:30", "+0130", "+14:00", "-12:00"]),
    sep=st.sampled_from(["T", " "]),
)
def test_fast_path_agrees_with_dateutil(moment: datetime, digits: int, zone: str, sep: str) -> None:
    fraction = f"{moment.microsecond:06d}{moment.microsecond % 1000:03d}"[:digits]
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (f".{fraction}" if digits else "") + zone
    assert parse_timestamp(text) == reference(text)


@settings(max_examples=1000)
@given(st.integers(-30_000_000_000_000, 250_000_000_000_000))
def test_round_trip(ms: int) -> None:
    assert parse_timestamp(format_ms(ms)) == ms
    assert (
        datetime_to_ms(datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)) == ms
    )
