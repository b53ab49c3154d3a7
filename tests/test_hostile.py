"""Hostile input and secrets (docs/hostile-input.md): answers too large to hold, XML entity
tricks, content that is odd in every way HCM's could be, login pages, TLS, and no secret in
any output whatever goes wrong.

Peak memory is measured on the real process: `atomsync once` (or a child parsing one
document) runs in a subprocess and is reaped with wait4(), whose rusage carries the peak
resident set size (the kernel's VmHWM). Every figure is printed (`pytest -s` shows them)
next to a baseline taken the same way from a normal run.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import pytest
from urllib3.exceptions import InsecureRequestWarning

from atomsync import atom, config
from atomsync.atom import FeedError, HtmlPageError, decode_content, parse
from atomsync.config import FeedConfig, HcmConfig
from atomsync.errors import ConfigError
from atomsync.feed import FetchError, HcmClient, Window
from atomsync.sim.hcm import XXE_FILE, HcmSimulator
from atomsync.sim.sandbox import USERNAME, Sandbox
from atomsync.timeutil import format_ms, parse_timestamp
from tests.conftest import (
    _OUTPUTS,
    ROOT,
    assert_no_secrets,
    atomsync,
    cli_env,
    entry_keys,
    published_keys,
    watermark,
)

DATA = Path(__file__).parent / "data"
MB = 1024 * 1024
# How far above a normal run's peak a hostile one may go: the 10 MB size cap, a copy of
# it, and slack for the allocator; nowhere near what the attacks cost without the guards
# (hundreds of MB to gigabytes).
RSS_BOUND_MB = 60
FAILED = "newhire: cycle failed: "
DTD_REFUSED = "HCM sent a document with a DTD (<!DOCTYPE or <!ENTITY)"
TOO_LARGE = "HCM's answer is larger than hcm.max_response_bytes"
NEWHIRE = FeedConfig("newhire", "newhire", "employee", "/hcmRestApi/atomservlet/employee/newhire")


# --------------------------------------------------------------------------- helpers


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float


def run_measured(argv: list[str], workdir: Path, timeout: float = 120) -> Run:
    """Run `argv` to completion and return its output and its peak RSS (wait4's
    ru_maxrss: the kernel's high-water mark of the process, in KiB on Linux)."""
    out, err = workdir / "measured.out", workdir / "measured.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=cli_env(), cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{argv} did not end within {timeout} s")
            time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    run = Run(proc.returncode, out.read_text(), err.read_text(), usage.ru_maxrss / 1024)
    _OUTPUTS.extend((run.stdout, run.stderr))  # scanned for secrets by the sandbox fixture
    return run


def once_measured(config_path: Path, workdir: Path) -> Run:
    return run_measured([sys.executable, "-m", "atomsync", "-c", str(config_path), "once"], workdir)


_PARSE_CHILD = """
import sys
from atomsync import atom
data = open(sys.argv[1], "rb").read()
try:
    entries = atom.parse(data)
except atom.FeedError as exc:
    print("FeedError:", exc)
else:
    print("entries:", len(entries), [(e.title, e.content_raw[:200]) for e in entries])
"""


def parse_measured(data: bytes, workdir: Path, name: str) -> Run:
    """`atom.parse(data)` in a child process of its own, for its peak RSS."""
    path = workdir / f"{name}.xml"
    path.write_bytes(data)
    return run_measured([sys.executable, "-c", _PARSE_CHILD, str(path)], workdir)


def report_rss(label: str, run: Run, baseline: Run) -> None:
    delta = run.peak_rss_mb - baseline.peak_rss_mb
    print(
        f"\npeak RSS {label}: {run.peak_rss_mb:.1f} MB "
        f"(baseline {baseline.peak_rss_mb:.1f} MB, {delta:+.1f})"
    )
    assert run.peak_rss_mb < baseline.peak_rss_mb + RSS_BOUND_MB, (label, run, baseline)


def failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if FAILED in line]


def bodies(box: Sandbox) -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in box.ons.accepted]


def feed_doc(*entries: bytes, prolog: bytes = b"") -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        + prolog
        + b'<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">New Hire</title>'
        + b"".join(entries)
        + b"</feed>\n"
    )


def entry_xml(
    entry_id: bytes = b"atomservlet:newhire:EMP1",
    updated: Optional[bytes] = b"2024-03-04T09:15:22.000Z",
    content: bytes = b'{"Context":[{"PersonId":"1"}]}',
    title: bytes = b"Jane Roe Hired",
) -> bytes:
    stamp = b"<updated>" + updated + b"</updated>" if updated is not None else b""
    return (
        b"<entry><id>" + entry_id + b"</id>" + stamp + b'<title type="text">' + title + b"</title>"
        b'<content type="text">' + content + b"</content></entry>"
    )


# --------------------------------------------------------------------------- 1. size cap


@pytest.mark.slow
def test_huge_answer_fails_the_cycle_keeps_the_watermark_and_memory_stays_bounded(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    config_path = sandbox.write_config()
    baseline = once_measured(config_path, tmp_path)
    assert baseline.returncode == 0, baseline.stderr
    w0 = watermark(sandbox)
    assert w0 is not None
    late = hcm.add_hires(1, updated_ms=hcm.now_ms() - 5_000)

    cases = [
        # 20 MB against the default 10 MB cap: announced by Content-Length, refused unread.
        ("20 MB declared, default cap", {}, {}, 10 * MB),
        # No Content-Length (chunked): read up to the cap, then refused.
        ("20 MB chunked, default cap", {"chunked": 1}, {}, 10 * MB),
        ("20 MB chunked, 64 KiB cap", {"chunked": 1}, {"max_response_bytes": 65536}, 65536),
    ]
    for label, params, hcm_keys, cap in cases:
        hcm.inject("huge", size_mb=20, **params)
        run = once_measured(sandbox.write_config(hcm=hcm_keys), tmp_path)
        assert run.returncode == 1, run.stderr
        [line] = failure_lines(run.stderr)
        assert f"{TOO_LARGE} ({cap} bytes): raise it, or lower hcm.page_size" in line, line
        assert f"watermark stays at {w0}" in line, line
        assert watermark(sandbox) == w0
        report_rss(label, run, baseline)

    # Nothing was lost: the entry that arrived meanwhile goes out once the answer is sane.
    assert atomsync("-c", str(config_path), "once").returncode == 0
    assert watermark(sandbox) == format_ms(late[0].updated_ms)
    keys = published_keys(sandbox)
    assert len(keys) == len(set(keys)) and set(keys) == entry_keys(sandbox)


# --------------------------------------------------------------------------- 2. XML


@pytest.fixture
def marker_file(tmp_path: Path) -> tuple[Path, str]:
    marker = "LOCAL-FILE-MARKER-7c1d"
    path = tmp_path / "local-secret.txt"
    path.write_text(marker + "\n")
    return path, marker


def xxe_variants(path: Path) -> dict[str, bytes]:
    url = f"file://{path}".encode()
    body = entry_xml(title=b"&xxe;", content=b'{"Context":[{"X":"&xxe;"}]}')
    return {
        # The layout feedparser's DOCTYPE rewrite understands: it drops SYSTEM entities.
        "own lines": feed_doc(
            body, prolog=b'<!DOCTYPE feed [\n<!ENTITY xxe SYSTEM "' + url + b'">\n]>\n'
        ),
        # One line: the rewrite leaves a broken DOCTYPE behind.
        "one line": feed_doc(
            body, prolog=b'<!DOCTYPE feed [<!ENTITY xxe SYSTEM "' + url + b'">]>\n'
        ),
        # A comment holding "<x" ends feedparser's notion of the prolog early: the DTD
        # reaches expat as it is (external entities are then skipped, silently).
        "rewrite bypassed": feed_doc(
            body, prolog=b'<!DOCTYPE feed [\n<!-- <x -->\n<!ENTITY xxe SYSTEM "' + url + b'">\n]>\n'
        ),
        # A parameter entity that would pull in a whole external DTD.
        "parameter entity": feed_doc(
            entry_xml(),
            prolog=b'<!DOCTYPE feed [\n<!-- <x -->\n<!ENTITY % pe SYSTEM "'
            + url
            + b'">\n%pe;\n]>\n',
        ),
        # Lower case is no DTD to any parser, and is refused all the same.
        "lower case": feed_doc(
            body, prolog=b'<!doctype feed [<!entity xxe system "' + url + b'">]>\n'
        ),
    }


def test_external_entities_are_never_read_the_page_is_refused(
    marker_file: tuple[Path, str],
) -> None:
    path, marker = marker_file
    for name, doc in xxe_variants(path).items():
        with pytest.raises(FeedError) as info:
            parse(doc)
        assert str(info.value).startswith(DTD_REFUSED), (name, info.value)
        assert marker not in str(info.value)


def test_feedparser_itself_never_expands_external_entities(marker_file: tuple[Path, str]) -> None:
    """A canary on the library beneath the screen: should a feedparser release start
    reading external entities, this fails even though atomsync refuses every DTD first."""
    import io

    import feedparser

    path, marker = marker_file
    for name, doc in xxe_variants(path).items():
        result = feedparser.parse(io.BytesIO(doc), sanitize_html=False, resolve_relative_uris=False)
        assert marker not in repr(result), name


def test_an_answer_naming_a_local_file_is_never_opened(tmp_path: Path) -> None:
    # Given bytes, feedparser tries them as a file name first (and would read /dev/zero
    # until memory runs out); atomsync hands it a stream.
    local = tmp_path / "feed.xml"
    local.write_bytes(feed_doc(entry_xml(entry_id=b"FROM-THE-LOCAL-DISK")))
    with pytest.raises(FeedError, match="not well-formed"):
        parse(str(local).encode())
    # Only after the check above: were file names opened, this would eat all memory.
    with pytest.raises(FeedError, match="not well-formed"):
        parse(b"/dev/zero")


def _quadratic(refs: int, kb: int, hidden: bool) -> bytes:
    value = b"A" * (kb * 1024)
    if hidden:
        # An XML comment to every XML parser (defusedxml included); feedparser's DOCTYPE
        # rewrite still finds the entity and its loose parser expands it, without limit.
        prolog = b'<!--\n<!DOCTYPE x>\n<!ENTITY a "' + value + b'">\n-->\n'
    else:
        prolog = b'<!DOCTYPE feed [\n<!ENTITY a "' + value + b'">\n]>\n'
    return feed_doc(entry_xml(content=b"&a;" * refs), prolog=prolog)


@pytest.mark.slow
def test_entity_bombs_are_refused_unexpanded_in_bounded_memory(tmp_path: Path) -> None:
    """Without the screen, either 66 KB quadratic document took a parse to ~760 MB."""
    from atomsync.sim.hcm import _BILLION_LAUGHS

    baseline = parse_measured((DATA / "newhire.xml").read_bytes(), tmp_path, "baseline")
    assert baseline.stdout.startswith("entries: 1"), baseline.stderr
    bombs = {
        "billion laughs": _BILLION_LAUGHS.encode(),
        "quadratic, 50 KB x 5000": _quadratic(5000, 50, hidden=False),
        "quadratic, DTD in a comment": _quadratic(5000, 50, hidden=True),
    }
    for label, doc in bombs.items():
        run = parse_measured(doc, tmp_path, "bomb")
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"FeedError: {DTD_REFUSED}"), (label, run.stdout)
        assert "lol" not in run.stdout and "AAAA" not in run.stdout
        report_rss(f"parse: {label} ({len(doc)} bytes)", run, baseline)


def test_shapes_that_hurt_feedparser_are_refused_before_it_runs() -> None:
    # feedparser's attribute handling is quadratic: 30,000 attributes on one element take
    # it about 8 s, a million (10 MB) hours. Deep nesting costs it ~400 bytes a level.
    many_attributes = b"<link " + b" ".join(b'a%d="1"' % i for i in range(30_000)) + b"/>"
    with pytest.raises(FeedError, match="an element with 30000 attributes"):
        parse(feed_doc(entry_xml().replace(b"</entry>", many_attributes + b"</entry>")))
    deep = b"<x>" * 100_000 + b"</x>" * 100_000
    with pytest.raises(FeedError, match=f"nested more than {atom.MAX_DEPTH} deep"):
        parse(feed_doc(entry_xml().replace(b"</entry>", deep + b"</entry>")))
    # Up to the limits, a document is an ordinary page.
    fine = b"<link " + b" ".join(b'a%d="1"' % i for i in range(atom.MAX_ATTRIBUTES)) + b"/>"
    nested = b"<x>" * 50 + b"</x>" * 50
    [e] = parse(feed_doc(entry_xml().replace(b"</entry>", fine + nested + b"</entry>")))
    assert e.id == "atomservlet:newhire:EMP1"


def test_undefined_and_html_entities_fail_the_page() -> None:
    for ref in (b"&nbsp;", b"&undefined;", b"&#0;"):
        with pytest.raises(FeedError, match="not well-formed"):
            parse(feed_doc(entry_xml(title=b"Jane" + ref)))
    # The five XML entities and character references are text, as always.
    [e] = parse(feed_doc(entry_xml(title=b"R&amp;D &lt;&gt;&quot;&apos; &#233;&#x263A;")))
    assert e.title == "R&D <>\"' é☺"


@pytest.mark.slow
def test_hostile_xml_from_hcm_fails_the_cycle_cleanly(sandbox: Sandbox, tmp_path: Path) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    config_path = sandbox.write_config()
    baseline = once_measured(config_path, tmp_path)
    assert baseline.returncode == 0, baseline.stderr
    w0 = watermark(sandbox)
    hcm.add_hires(1, updated_ms=hcm.now_ms() - 5_000)
    secret_line = Path(XXE_FILE).read_text().splitlines()[0]  # root:x:0:0:...

    for fault, params in (
        ("billion_laughs", {}),
        ("quadratic", {"kb": 50, "refs": 5000}),
        ("quadratic", {"kb": 50, "refs": 5000, "hidden": 1}),
        ("xxe", {}),
    ):
        hcm.inject(fault, **params)
        run = once_measured(config_path, tmp_path)
        assert run.returncode == 1, run.stderr
        [line] = failure_lines(run.stderr)
        assert DTD_REFUSED in line and f"watermark stays at {w0}" in line, line
        assert "ERROR" not in line.split(FAILED)[0]  # a warning: retried, no person needed
        assert secret_line not in run.stdout + run.stderr
        assert watermark(sandbox) == w0
        report_rss(f"once: {fault} {params}", run, baseline)

    assert atomsync("-c", str(config_path), "once").returncode == 0
    assert set(published_keys(sandbox)) == entry_keys(sandbox)
    for body in bodies(sandbox):
        assert secret_line not in json.dumps(body)


# --------------------------------------------------------------------------- 3. content


def test_content_cases_are_published_with_what_could_be_read() -> None:
    cases = {
        '{"Context": [': "content is not valid JSON",
        '{"Context": "Roe, Jane"}': "Context is not a list of objects",
        '{"Context": [{"A": "1"}, "x"]}': "Context is not a list of objects",
        '{"Context": [], "Changed Attributes": {"a": 1}}': "Changed Attributes is not a list",
        "[1, 2]": "content JSON is not an object",
        "   ": "empty content",
        "[" * 100_000: "nested too deeply",
        '{"Context": [{"A": NaN}]}': None,  # Python's json reads NaN; it is kept as it is
    }
    for text, error in cases.items():
        fields = decode_content(text)
        if error is None:
            assert fields.error is None
        else:
            assert fields.error is not None and error in fields.error, (text[:40], fields.error)
    # A Context object given alone is taken as a list of one; extra keys are ignored.
    assert decode_content('{"Context": {"A": "1"}, "Other": 5}').context == [{"A": "1"}]
    # Through parse: the entry keeps its id, timestamps and raw text, flagged.
    [e] = parse(feed_doc(entry_xml(content=b'{"Context": "Roe, Jane"}')))
    assert e.content_error == "Context is not a list of objects"
    assert e.content_raw == '{"Context": "Roe, Jane"}' and e.context == []
    assert format_ms(e.updated_ms or 0) == "2024-03-04T09:15:22.000Z"


def test_an_entry_without_id_or_readable_cursor_refuses_the_whole_page() -> None:
    good = entry_xml(entry_id=b"good")
    for bad, words in (
        (entry_xml(entry_id=b"  "), "without an <id> (its <updated> is 2024-03-04T09:15:22.000Z)"),
        (entry_xml(updated=None), "has no <updated> timestamp"),
        (entry_xml(updated=b""), "has no <updated> timestamp"),
        (entry_xml(updated=b"Mon, 04 Mar 2024 09:15:22 GMT"), "unreadable <updated>"),
        (entry_xml(updated=b"2024-03-04T09:15:22 GMT"), "(not an ISO 8601 time atomsync can"),
        # Year 10000 in UTC: no key or watermark could be written for it.
        (entry_xml(updated=b"9999-12-31T23:59:59-23:59"), "unreadable <updated>"),
    ):
        with pytest.raises(FeedError) as info:
            parse(feed_doc(good, bad))  # the good entry must not come back alone
        assert words in str(info.value), info.value
        assert "the page is refused" in str(info.value)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-03-04T09:15:22.000Z", "2024-03-04T09:15:22.000Z"),
        ("2024-03-04T09:15:22", "2024-03-04T09:15:22.000Z"),  # no zone: UTC, as HCM means it
        ("2024-03-04 09:15:22", "2024-03-04T09:15:22.000Z"),  # a space for the T
        ("2024-03-04T10:15:22+01:00", "2024-03-04T09:15:22.000Z"),  # offsets converted
        ("2024-03-04T09:15:22.1239Z", "2024-03-04T09:15:22.123Z"),  # floored to the ms
        ("20240304T091522Z", "2024-03-04T09:15:22.000Z"),  # ISO 8601 basic format
        ("2024-03-04", "2024-03-04T00:00:00.000Z"),  # a date alone: midnight UTC
        ("Mon, 04 Mar 2024 09:15:22 GMT", None),  # RFC 822: not ISO 8601, refused
        ("2024-03-04T09:15:22 GMT", None),
        ("04/03/2024 09:15", None),
    ],
)
def test_cursor_timestamp_forms(stamp: str, expected: Optional[str]) -> None:
    doc = feed_doc(entry_xml(updated=stamp.encode()))
    if expected is None:
        with pytest.raises(FeedError, match="unreadable <updated>"):
            parse(doc)
        return
    [e] = parse(doc)
    assert format_ms(e.updated_ms or 0) == expected


def test_an_unreadable_timestamp_outside_the_cursor_is_dropped_not_fatal() -> None:
    doc = feed_doc(entry_xml().replace(b"</entry>", b"<published>last Tuesday</published></entry>"))
    [e] = parse(doc)
    assert e.published_ms is None and e.updated_ms == parse_timestamp("2024-03-04T09:15:22Z")
    with pytest.raises(FeedError, match="unreadable <published>"):
        parse(doc, "published")


def test_a_timestamp_that_cannot_be_written_back_is_dropped_outside_the_cursor() -> None:
    # In UTC this is in the year 10000, which the written form cannot hold.
    stamp = b"9999-12-31T23:59:59-23:59"
    doc = feed_doc(
        entry_xml().replace(b"</entry>", b"<published>" + stamp + b"</published></entry>")
    )
    [e] = parse(doc)
    assert e.published_ms is None  # the message says "published": null, not a crash
    # Years before 1000 are written with four digits, so they round-trip and are kept.
    early = feed_doc(
        entry_xml().replace(b"</entry>", b"<published>0999-12-31T23:59:59.000Z</published></entry>")
    )
    [kept] = parse(early)
    assert format_ms(kept.published_ms or 0) == "0999-12-31T23:59:59.000Z"


def test_format_ms_round_trips_years_before_1000() -> None:
    ms = parse_timestamp("0999-12-31T23:59:59.000Z")
    assert format_ms(ms) == "0999-12-31T23:59:59.000Z"


@pytest.mark.slow
def test_odd_content_is_published_raw_trimmed_or_dead_lettered(sandbox: Sandbox) -> None:
    hcm = sandbox.hcm
    at = hcm.now_ms() - 60_000

    def add(n: int, **changes: Any) -> str:
        entry = replace(hcm.make_entry("newhire", updated_ms=at + n * 10), **changes)
        hcm.add(entry)
        return entry.id

    not_json = add(0, content='{"Context": [')
    not_list = add(1, content='{"Context": "Roe, Jane"}')
    empty = add(2, content="")
    enormous = add(3, content=json.dumps({"Context": [{"Blob": "x" * 100_000}]}))
    too_big = add(4, title="T" * 100_000)  # nothing to trim can make this fit
    fine = add(5)
    config_path = sandbox.write_config()
    result = atomsync("-c", str(config_path), "once")
    assert result.returncode == 1, result.stderr  # a dead letter: `once` says so
    got = {b["id"]: b for b in bodies(sandbox)}
    assert set(got) == {not_json, not_list, empty, enormous, fine}
    for entry_id, error, raw in (
        (not_json, "not valid JSON", '{"Context": ['),
        (not_list, "Context is not a list of objects", '{"Context": "Roe, Jane"}'),
        (empty, "empty content", ""),
    ):
        body = got[entry_id]
        assert body["content_parsed"] is False and error in body["content_error"]
        assert body["content_raw"] == raw and body["context"] == []
    assert got[enormous]["trimmed"] == ["context"] and got[enormous]["context"] == []
    assert got[enormous]["content_parsed"] is True
    assert got[fine]["content_parsed"] is True and "trimmed" not in got[fine]
    listed = atomsync("-c", str(config_path), "deadletter", "list")
    assert too_big in listed.stdout and listed.stdout.count("\n") == 1
    assert watermark(sandbox) == format_ms(at + 50)  # every entry handled, none left behind


@pytest.mark.slow
def test_same_id_and_timestamp_with_new_content_is_not_published_again(sandbox: Sandbox) -> None:
    hcm = sandbox.hcm
    first = hcm.add_entry("newhire", updated_ms=hcm.now_ms() - 30_000, key="EMP42")
    config_path = sandbox.write_config()
    assert atomsync("-c", str(config_path), "once").returncode == 0
    # HCM shows the same event with other content (a correction in place): the key is
    # id + timestamp, so atomsync has already processed it.
    hcm.add(replace(first, content='{"Context": [{"PersonId": "changed"}]}'))
    assert atomsync("-c", str(config_path), "once").returncode == 0
    assert [b["id"] for b in bodies(sandbox)] == [first.id]
    assert bodies(sandbox)[0]["context"][0]["PersonId"] != "changed"
    # A new timestamp is a new event.
    hcm.add(replace(first, updated_ms=first.updated_ms + 1, content='{"Context": []}'))
    assert atomsync("-c", str(config_path), "once").returncode == 0
    assert [b["id"] for b in bodies(sandbox)] == [first.id, first.id]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("entry_without_id", "HCM sent an entry without an <id> (its <updated> is "),
        ("unreadable_updated", "has an unreadable <updated> 'Mon, 04 Mar 2024 09:15:22 GMT'"),
    ],
)
def test_an_unusable_entry_fails_the_cycle_and_holds_the_watermark(
    sandbox: Sandbox, fault: str, words: str
) -> None:
    hcm = sandbox.hcm
    hcm.add_hires(2, updated_ms=hcm.now_ms() - 20_000, spacing_ms=10)
    config_path = sandbox.write_config()
    assert atomsync("-c", str(config_path), "once").returncode == 0
    w0 = watermark(sandbox)
    readable, broken = hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
    hcm.inject(fault)  # the page's last entry, `broken`, loses its <id> / its timestamp
    result = atomsync("-c", str(config_path), "once")
    assert result.returncode == 1
    [line] = failure_lines(result.stderr)
    assert words in line and f"watermark stays at {w0}" in line, line
    # The readable entry on the same page is not published either: the page is refused.
    assert len(sandbox.ons.accepted) == 2 and watermark(sandbox) == w0
    assert atomsync("-c", str(config_path), "once").returncode == 0
    keys = published_keys(sandbox)
    assert len(keys) == len(set(keys)) == 4 and set(keys) == entry_keys(sandbox)
    assert watermark(sandbox) == format_ms(broken.updated_ms)
    assert readable.id in {b["id"] for b in bodies(sandbox)}


# --------------------------------------------------------------------------- 4. login pages


@pytest.mark.parametrize(
    "page",
    [
        b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"></head></html>',
        b"<!doctype html><html><body><form></form></body></html>",
        b"<?xml version='1.0'?>\n<!-- sign in -->\n<html xmlns='http://www.w3.org/1999/xhtml'/>",
        b"\n  <HTML><HEAD><TITLE>Sign In</TITLE></HEAD></HTML>",
    ],
)
def test_an_html_page_is_a_login_page_whatever_its_shape(page: bytes) -> None:
    with pytest.raises(HtmlPageError, match="HTML page"):
        parse(page)


def test_a_feed_mentioning_html_is_still_a_feed() -> None:
    cdata = b"<![CDATA[<html><body>not a page</body></html>]]>"
    [e] = parse(feed_doc(entry_xml(content=cdata)))
    assert e.content_raw == "<html><body>not a page</body></html>"


def test_login_page_served_as_an_atom_feed_is_a_login_page_error() -> None:
    with HcmSimulator(username=USERNAME, password="pw-login-1234") as sim:
        client = HcmClient(HcmConfig(base_url=sim.url, username=USERNAME, password="pw-login-1234"))
        try:
            sim.inject("login_page_atom")
            with pytest.raises(FetchError) as info:
                client.fetch_page(NEWHIRE, Window("updated", None, sim.now_ms()), 1)
        finally:
            client.close()
    assert info.value.kind == "login_page"
    assert str(info.value).startswith(
        "HCM returned a login page (an HTML page) instead of the feed: check the credentials"
    )
    assert "Basic auth" in str(info.value) and "SSO" in str(info.value)


@pytest.mark.slow
def test_login_page_served_as_an_atom_feed_end_to_end(sandbox: Sandbox) -> None:
    sandbox.hcm.add_hires(1, updated_ms=sandbox.hcm.now_ms() - 10_000)
    sandbox.hcm.inject("login_page_atom")
    result = atomsync("-c", str(sandbox.write_config()), "once")
    assert result.returncode == 1
    [line] = failure_lines(result.stderr)
    assert " ERROR " in line and "HCM returned a login page (an HTML page)" in line, line
    assert sandbox.ons.accepted == []


# --------------------------------------------------------------------------- 5. TLS


def make_tls(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA, and a server certificate it signed for 127.0.0.1 (an IP SAN)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "atomsync test CA")])

    def usage(**on: bool) -> x509.KeyUsage:
        names = [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ]
        return x509.KeyUsage(**{n: on.get(n, False) for n in names})

    def builder(subject: x509.Name, key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    ca_cert = (
        builder(ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        builder(server_name, key)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = directory / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_pem, key_pem = directory / "server.pem", directory / "server.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_pem, key_pem)
    return ca_pem, context


def test_tls_client_against_the_simulator_on_https(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_pem, context = make_tls(tmp_path)
    # A system-wide bundle in the environment (common on corporate hosts): requests lets it
    # replace a session's `verify`, so a configured CA bundle, or false, was ignored.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(DATA / "newhire.xml"))
    with HcmSimulator(username=USERNAME, password="pw-tls-1234", ssl_context=context) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        sim.add_hires(1, updated_ms=sim.now_ms() - 1000)
        window = Window("updated", None, sim.now_ms())
        outcomes: dict[str, Any] = {}
        for verify in (True, str(ca_pem), False):
            cfg = HcmConfig(sim.url, USERNAME, "pw-tls-1234", verify_tls=verify)
            client = HcmClient(cfg)
            try:
                with warnings.catch_warnings(record=True) as warned:
                    warnings.simplefilter("always")
                    outcomes[str(verify)] = len(client.fetch_page(NEWHIRE, window, 1))
                outcomes[f"{verify} warned"] = any(
                    issubclass(w.category, InsecureRequestWarning) for w in warned
                )
            except FetchError as exc:
                outcomes[str(verify)] = exc.kind
            finally:
                client.close()
    assert outcomes == {
        "True": "tls",
        str(ca_pem): 1,
        f"{ca_pem} warned": False,
        "False": 1,
        "False warned": True,  # off is loud
    }


@pytest.mark.slow
def test_tls_verification_default_ca_bundle_and_off(sandbox: Sandbox, tmp_path: Path) -> None:
    ca_pem, context = make_tls(tmp_path)
    hcm = sandbox.hcm
    hcm.stop()
    hcm.ssl_context = context  # the same simulator, now on HTTPS
    hcm.start()
    assert hcm.url.startswith("https://127.0.0.1:")
    hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)

    # Verification is on by default: a private CA is not trusted, and the line says why.
    result = atomsync("-c", str(sandbox.write_config()), "once")
    assert result.returncode == 1
    [line] = failure_lines(result.stderr)
    assert " ERROR " in line and "TLS failed talking to HCM (" in line, line
    assert "certificate verify failed" in line and "check hcm.verify_tls" in line, line
    assert hcm.requests == [] and sandbox.ons.accepted == []

    # verify_tls: a CA bundle: verified end to end, published to the ONS simulator.
    bundle = sandbox.write_config(hcm={"verify_tls": str(ca_pem)})
    result = atomsync("-c", str(bundle), "once")
    assert result.returncode == 0, result.stderr
    assert len(sandbox.ons.accepted) == 2 and sandbox.ons.rejected == []
    assert {r.status for r in hcm.requests} == {200}

    # A bundle with another CA fails the same way.
    (tmp_path / "other").mkdir()
    other_ca, _ = make_tls(tmp_path / "other")
    result = atomsync("-c", str(sandbox.write_config(hcm={"verify_tls": str(other_ca)})), "once")
    assert result.returncode == 1 and "check hcm.verify_tls" in result.stderr

    # verify_tls: false works, and is dangerous (docs/hostile-input.md): anyone on the path
    # can read the password.
    hcm.add_hires(1, updated_ms=hcm.now_ms() - 5_000)
    result = atomsync("-c", str(sandbox.write_config(hcm={"verify_tls": False})), "once")
    assert result.returncode == 0, result.stderr
    assert len(sandbox.ons.accepted) == 3
    assert "InsecureRequestWarning" in result.stderr
    assert "hcm.verify_tls is false" in result.stderr  # atomsync's own warning, at start


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://pod.fa.us-ashburn-1.oraclecloud.com", False),
        ("http://localhost.example.com", False),
        ("http://127.0.0.1.nip.io", False),
        ("http://0.0.0.0:8080", False),
        ("http://10.0.0.5", False),
        ("http://127.0.0.1:8080", True),
        ("http://127.5.6.7", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("https://pod.fa.us-ashburn-1.oraclecloud.com", True),
    ],
)
def test_plain_http_is_refused_off_loopback_unless_forced(url: str, allowed: bool) -> None:
    text = (
        f"hcm:\n  base_url: {url}\n  username: U\n  password: pw-1234\npublisher:\n  kind: stdout\n"
    )
    if allowed:
        assert config.parse(text, env={}).hcm.base_url == url
    else:
        with pytest.raises(ConfigError) as info:
            config.parse(text, env={})
        assert info.value.key == "hcm.base_url"
        assert "unencrypted" in str(info.value) and "allow_insecure_http" in str(info.value)
    forced = text.replace("  username:", "  allow_insecure_http: true\n  username:")
    assert config.parse(forced, env={}).hcm.allow_insecure_http is True


def test_plain_http_refusal_stops_the_cli_with_exit_78(tmp_path: Path) -> None:
    path = tmp_path / "atomsync.yaml"
    path.write_text(
        "hcm:\n  base_url: http://pod.example.com\n  username: U\n  password: pw-cli-1234\n"
        f"publisher:\n  kind: stdout\nstate:\n  dir: {tmp_path / 'state'}\n"
    )
    result = atomsync("-c", str(path), "once")
    assert result.returncode == 78
    assert "hcm.base_url: plain http:// would send the HCM password unencrypted" in result.stderr
    assert "pw-cli-1234" not in result.stdout + result.stderr


# --------------------------------------------------------------------------- 6. redaction

# Characters that JSON and Python escape, so that an escaped leak would show too. ASCII:
# requests sends Basic credentials in Latin-1, the simulator reads them as UTF-8.
NASTY_PASSWORD = "Pw\"7\\q%Zx&'-leak"


def secret_forms(box: Sandbox) -> dict[str, str]:
    """Every secret, and the forms it could take in an output."""
    assert box.key is not None
    token = base64.b64encode(f"{USERNAME}:{box.password}".encode()).decode()
    forms = {
        "password": box.password,
        "password (JSON)": json.dumps(box.password)[1:-1],
        "password (JSON, UTF-8)": json.dumps(box.password, ensure_ascii=False)[1:-1],
        "password (repr)": repr(box.password)[1:-1],
        "Basic-auth token": token,
    }
    pem = box.key.private_pem.decode().splitlines()[1:-1]
    forms.update({f"private key line {i}": line for i, line in enumerate(pem, 1)})
    return forms


def scan(box: Sandbox, root: Path, texts: list[str]) -> tuple[int, list[str]]:
    """(checks made, hits) over every output and every file but the two holding secrets."""
    allowed = {box.dir / "hcm_password", box.dir / "oci_api_key.pem"}
    blobs = [(f"output {i}", t.encode()) for i, t in enumerate(texts)]
    blobs += [(str(p), p.read_bytes()) for p in root.rglob("*") if p.is_file() and p not in allowed]
    checks, hits = 0, []
    for where, data in blobs:
        for name, form in secret_forms(box).items():
            checks += 1
            if form.encode() in data:
                hits.append(f"{name} in {where}")
    return checks, hits


_BUG = """
import os, runpy, sys
import atomsync.sync as sync

def buggy(self, entry):
    secret = open(os.environ["BUG_PASSWORD_FILE"]).read().strip()
    token = __import__("base64").b64encode(("INTEGRATION_USER:" + secret).encode()).decode()
    raise RuntimeError("bug holding " + secret + " and Basic " + token + " " + repr(secret))

sync._Cycle.process = buggy
sys.argv = ["atomsync", *sys.argv[1:]]
runpy.run_module("atomsync", run_name="__main__")
"""


@pytest.mark.slow
def test_no_secret_in_any_output_or_file_at_debug_level(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "sandbox", password=NASTY_PASSWORD)
    outputs: list[str] = []
    with box:
        hcm, ons = box.hcm, box.ons
        hcm.add_hires(2, updated_ms=hcm.now_ms() - 10_000, spacing_ms=10)
        logs = {"level": "DEBUG"}
        json_file = {**logs, "format": "json", "file": str(box.dir / "atomsync.log")}
        scenarios: list[tuple[Any, dict[str, Any], str]] = [
            (lambda: hcm.inject("401"), logs, "HCM rejected the credentials (401)"),
            (lambda: hcm.inject("403"), logs, "HCM refused access (403)"),
            (lambda: hcm.inject("500"), logs, "HCM answered 500"),
            (lambda: hcm.inject("reset"), logs, "HCM dropped the connection"),
            (lambda: hcm.inject("login_page"), logs, "HCM returned a login page"),
            (lambda: hcm.inject("truncated"), logs, "not well-formed"),
            (lambda: ons.inject("401"), logs, "401"),
            (lambda: hcm.inject("401"), json_file, "HCM rejected the credentials (401)"),
        ]
        for inject, logging_keys, _ in scenarios:
            inject()
            result = atomsync("-c", str(box.write_config(logging=logging_keys)), "once")
            assert result.returncode == 1, result.stderr
            outputs += [result.stdout, result.stderr]
        log_file = (box.dir / "atomsync.log").read_text()
        causes = [line for text in [*outputs[1::2], log_file] for line in text.splitlines()]
        causes = [line for line in causes if FAILED in line]
        assert len(causes) == len(scenarios), causes
        for line, (_, _, cause) in zip(causes, scenarios):
            assert cause in line, (cause, line)  # each run failed for the reason intended
        assert "DEBUG urllib3" in outputs[1] and '"level": "DEBUG"' in log_file  # debug was on

        # A bug in a cycle whose exception carries the secrets: the traceback is logged,
        # masked.
        env = cli_env({"BUG_PASSWORD_FILE": str(box.dir / "hcm_password")})
        bug = subprocess.run(
            [sys.executable, "-c", _BUG, "-c", str(box.write_config(logging=logs)), "once"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert bug.returncode == 1
        assert "newhire: internal error in the cycle" in bug.stderr
        assert "Traceback" in bug.stderr and "RuntimeError: bug holding ***" in bug.stderr
        outputs += [bug.stdout, bug.stderr]

        assert atomsync("-c", str(box.write_config()), "once").returncode == 0  # all clear
    checks, hits = scan(box, tmp_path, outputs)
    print(
        f"\nsecret scan: {checks} checks over {len(outputs)} outputs and every file, hits: {hits}"
    )
    assert hits == []
    assert checks > 500
    assert_no_secrets(box, tmp_path)


def test_redaction_covers_the_escaped_forms_of_a_secret() -> None:
    """JSON log lines and Python reprs escape `"`, `\\` and control characters: a secret
    holding them must be masked in those forms too, tracebacks included."""
    import io
    import logging

    from atomsync import logsetup

    secret = 'pw"with\\back\té-9'
    for fmt in ("json", "text"):
        buf = io.StringIO()
        logsetup.configure(fmt=fmt, secrets=[secret], env={}, stream=buf)
        log = logging.getLogger("atomsync.test")
        log.warning("leak %s and %r", secret, (USERNAME, secret))
        try:
            raise RuntimeError(f"boom {secret!r} {secret}")
        except RuntimeError:
            log.exception("internal")
        text = buf.getvalue()
        escapes = (
            lambda t: json.dumps(t)[1:-1],
            lambda t: json.dumps(t, ensure_ascii=False)[1:-1],
            lambda t: repr(t)[1:-1],
        )
        once = {secret} | {escape(secret) for escape in escapes}
        for form in once | {escape(t) for t in once for escape in escapes}:
            assert form not in text, (fmt, form, text)
        assert text.count("***") >= 4, text
    logging.getLogger().handlers.clear()
