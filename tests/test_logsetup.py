"""Log formats: text, journald priority prefixes, JSON lines, and redaction."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from atomsync import logsetup


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    yield io.StringIO()
    logging.getLogger().handlers.clear()


def test_text_has_utc_timestamps_and_redacts(capture: io.StringIO) -> None:
    logsetup.configure(secrets=["hunter2-secret"], env={}, stream=capture)
    logging.getLogger("atomsync.x").warning("login with hunter2-secret failed")
    line = capture.getvalue()
    assert "hunter2-secret" not in line and "***" in line
    assert line.split(" ")[0].endswith("Z") and " WARNING atomsync.x: " in line


def test_json_lines_carry_extras(capture: io.StringIO) -> None:
    logsetup.configure(fmt="json", env={}, stream=capture)
    logging.getLogger("atomsync.sync").info(
        "published",
        extra={"feed": "newhire", "entry_id": "atomservlet:newhire:E1", "action": "published"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("atomsync").exception("oops")
    first, second = (json.loads(x) for x in capture.getvalue().splitlines())
    assert (
        first["feed"] == "newhire" and first["action"] == "published" and first["level"] == "INFO"
    )
    assert "ValueError: boom" in second["error"]


def test_journald_prefixes_every_line(capture: io.StringIO, tmp_path: object) -> None:
    r, w = os.pipe()
    try:
        st = os.fstat(w)
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        with os.fdopen(w, "w", closefd=False) as stream:
            assert logsetup.under_journald(env, stream)
        assert not logsetup.under_journald(env)  # stderr is not that stream
    finally:
        os.close(r)
        os.close(w)
    formatter = logsetup.JournalFormatter()
    try:
        raise RuntimeError("x")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "atomsync", logging.ERROR, "", 0, "two\nlines", None, sys.exc_info()
        )
    lines = formatter.format(record).splitlines()
    assert all(line.startswith("<3>") for line in lines) and lines[0] == "<3>atomsync: two"
