"""Fuzzing: the Atom parser and the configuration loader fail only in their own ways.

`atom.parse` on random bytes, on valid pages mangled (cut short, bytes flipped, tags, entities
and DTD fragments spliced in) and on generated pages with random timestamps and content
returns a list of usable entries or raises FeedError, nothing else, and never part of a page.
`config.parse` on random YAML-ish documents returns a Config or raises a ConfigError that
names a key or says what is wrong. CASES examples per property in `make test`; the `soak`
variants (`make soak`) run SOAK_CASES each.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Optional
from xml.sax.saxutils import escape

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomsync import catalog, config
from atomsync import message as messages
from atomsync.atom import Entry, FeedError, decode_content, parse
from atomsync.errors import ConfigError
from atomsync.sim.hcm import render_feed
from atomsync.sim.hcmdata import EntryFactory
from atomsync.timeutil import format_ms, parse_timestamp

CASES = 2000
SOAK_CASES = 20_000
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _soak_only_when_asked(request: pytest.FixtureRequest) -> None:
    """The soak variants run under `-m soak` (make soak), not in a plain run of this file."""
    asked = "soak" in (request.config.getoption("markexpr") or "")
    if request.node.get_closest_marker("soak") is not None and not asked:
        pytest.skip("a soak run: select it with -m soak (make soak)")


def fuzz(strategy: st.SearchStrategy[Any], cases: int) -> Callable[..., Any]:
    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        return settings(
            max_examples=cases,
            deadline=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.function_scoped_fixture,
            ],
        )(given(strategy)(test))

    return decorate


# --------------------------------------------------------------------------- the parser


def _page(n: int, seed: int) -> bytes:
    factory = EntryFactory(seed)
    coll = catalog.lookup("newhire")
    assert coll is not None
    base = 1_709_543_722_000
    entries = [factory.make("newhire", updated_ms=base + i * 1001) for i in range(n)]
    text = render_feed("https://pod.example.com", coll, entries, now_ms=base, links={"self": "x"})
    return text.encode("utf-8")


PAGES = [
    (DATA / "newhire.xml").read_bytes(),
    (DATA / "mixed.xml").read_bytes(),
    _page(3, 1),
    _page(1, 2),
]

# Fragments a broken or hostile server might splice into a page.
FRAGMENTS = [
    b'<!DOCTYPE feed [<!ENTITY a "AAAA">]>',
    b'\n<!DOCTYPE x>\n<!ENTITY a "AAAA">\n',
    b'<!--\n<!DOCTYPE x>\n<!ENTITY a "AAAA">\n-->',
    b'<!ENTITY xxe SYSTEM "file:///etc/passwd">',
    b"&a;",
    b"&xxe;",
    b"&amp;",
    b"&nbsp;",
    b"&#0;",
    b"&#x110000;",
    b"&#233;",
    b"<entry>",
    b"</entry>",
    b"<entry><id>x</id><updated>2024-01-01T00:00:00Z</updated></entry>",
    b"<entry><updated>2024-01-01T00:00:00Z</updated></entry>",
    b"<id></id>",
    b"<id>dup</id>",
    b"<updated>2024-13-45T99:99:99Z</updated>",
    b"<updated>Mon, 04 Mar 2024 09:15:22 GMT</updated>",
    b"<updated>0001-01-01T00:00:00Z</updated>",
    b"<published>9999-12-31T23:59:59-23:59</published>",
    b'<content type="text">',
    b'<content type="html">&lt;b&gt;x&lt;/b&gt;</content>',
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?pi x?>",
    b"<html>",
    b"<a:b>",
    b' xmlns:a="urn:a"',
    b'<link rel="edit" href="javascript:alert(1)"/>',
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\xe9",
    b"\r\n",
    b'{"Context": [',
    b'"Context" : "x"',
    b"<x>" * 80,
]


def check_parse(data: bytes, cursor: str = "updated") -> Optional[list[Entry]]:
    """parse() returns usable entries or raises FeedError; nothing else ever escapes."""
    refused: Optional[FeedError] = None
    try:
        entries = parse(data, cursor)
    except FeedError as exc:
        refused = exc
    if refused is not None:
        assert str(refused).strip(), "a FeedError must say what is wrong"
        return None
    for e in entries:
        assert e.id and e.id == e.id.strip()
        at = e.cursor_ms(cursor)
        assert parse_timestamp(format_ms(at)) == at  # storable as key and watermark
        e.key(cursor)
        msg = messages.build(e, feed="newhire", workspace="employee", cursor=cursor, limit=1 << 62)
        json.dumps(msg.body, ensure_ascii=False)
        assert (e.content_error is None) == (msg.body["content_parsed"] is True)
    return entries


@fuzz(st.binary(max_size=2048), CASES)
def test_random_bytes(data: bytes) -> None:
    check_parse(data)


@pytest.mark.soak
@fuzz(st.binary(max_size=65536), SOAK_CASES)
def test_random_bytes_soak(data: bytes) -> None:
    check_parse(data)


@st.composite
def truncations(draw: st.DrawFn) -> tuple[bytes, int]:
    page = draw(st.sampled_from(PAGES))
    return page, draw(st.integers(0, len(page)))


def check_truncation(case: tuple[bytes, int]) -> None:
    page, cut = case
    whole = check_parse(page)
    assert whole is not None
    got = check_parse(page[:cut])
    if cut < len(page.rstrip()):
        assert got is None, f"a page cut at {cut} of {len(page)} bytes was accepted"
    else:
        assert got is not None and [e.key("updated") for e in got] == [
            e.key("updated") for e in whole
        ]


@fuzz(truncations(), CASES)
def test_truncated_pages_never_yield_part_of_a_page(case: tuple[bytes, int]) -> None:
    check_truncation(case)


@pytest.mark.soak
@fuzz(truncations(), SOAK_CASES)
def test_truncated_pages_never_yield_part_of_a_page_soak(case: tuple[bytes, int]) -> None:
    check_truncation(case)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(PAGES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "random"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(FRAGMENTS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "duplicate":
            end = min(len(data), at + draw(st.integers(1, 400)))
            data[at:at] = data[at:end]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@fuzz(mutations(), CASES)
def test_mangled_pages(data: bytes) -> None:
    check_parse(data)
    check_parse(data, "published")


@pytest.mark.soak
@fuzz(mutations(), SOAK_CASES)
def test_mangled_pages_soak(data: bytes) -> None:
    check_parse(data)
    check_parse(data, "published")


# Generated pages: random ids, timestamps and content, written the way HCM writes them.

# Text as HCM could send it: tricky samples (whitespace that feedparser strips, C1 controls
# and mojibake that it rewrites, markup characters, astral planes) or short random text.
_TEXT_SAMPLES = [
    "",
    " ",
    "\t\n",
    "Roe, Jane",
    "  padded  ",
    "\u2028line\u2029",
    "\xa0nbsp\xa0",
    "\x85nel",
    "\x80\x9f",
    "Ã©",
    "Â©",
    "ü",
    "José",
    "<b>&amp;</b>",
    "]]>",
    "&lt;",
    '"quoted"',
    "\\",
    "☺",
    "\U0001f600",
    "\ufeff",
    "atomservlet:newhire:EMP300100555000111",
]
_XML_TEXT = st.sampled_from(_TEXT_SAMPLES) | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF) | st.sampled_from("\t\n☺\u2028"),
    max_size=12,
)
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _XML_TEXT
_json_values = _json_scalars | st.lists(_json_scalars, max_size=3)
_contexts = st.lists(st.dictionaries(_XML_TEXT, _json_values, max_size=2), max_size=2)
_contents = st.one_of(
    st.builds(lambda c: json.dumps({"Context": c}, ensure_ascii=False), _contexts),
    st.builds(
        lambda c, a, f: json.dumps({"Context": c, "Changed Attributes": a, "FlexFields": f}),
        _contexts | _json_values,
        _json_values,
        _json_values,
    ),
    st.sampled_from(['{"Context": [', "[1, 2]", "null", '{"Context": {"A": "1"}}', "{}"]),
    _XML_TEXT,
)

_OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[str, Optional[int]]:
    """(text, epoch ms if it must be read as exactly that, None if it may be refused)."""
    moment = draw(
        st.datetimes(
            min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.none()
        )
    )
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    offset = draw(_OFFSETS)
    local = moment + timedelta(minutes=offset)
    sign = "+" if offset >= 0 else "-"
    zone = draw(st.sampled_from(["Z", f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}", ""]))
    if zone in ("Z", ""):
        local = moment  # no zone: read as UTC
    text = local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}" + zone
    utc_ms = (moment - datetime(1970, 1, 1)) // timedelta(milliseconds=1)
    form = draw(st.sampled_from(["exact", "garbled", "random"]))
    if form == "exact":
        return text, utc_ms
    if form == "garbled":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(["", " ", "x", "T", ":", "99", "-"])), None
    return draw(_XML_TEXT), None


@st.composite
def generated_pages(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]]]:
    specs = []
    for _ in range(draw(st.integers(0, 3))):
        specs.append(
            {
                "id": draw(_XML_TEXT),
                "updated": draw(timestamps()),
                "content": draw(_contents),
                "title": draw(st.sampled_from(_TEXT_SAMPLES)),
            }
        )
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">']
    for s in specs:
        parts.append(
            f"<entry><id>{escape(s['id'])}</id><updated>{escape(s['updated'][0])}</updated>"
            f'<title type="text">{escape(s["title"])}</title>'
            f'<content type="text">{escape(s["content"], {chr(34): "&quot;"})}</content></entry>'
        )
    parts.append("</feed>")
    return "".join(parts).encode("utf-8"), specs


def as_feedparser_keeps(text: str) -> str:
    """Text as feedparser hands it over: stripped; text whose Latin-1 bytes are valid UTF-8
    re-read as UTF-8 ("Ã©" is "é"); C1 controls as Windows-1252 ("\x80" is "€")."""
    from feedparser.html import _cp1252

    text = text.strip()
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("iso-8859-1").decode("utf-8")
    return text.translate(_cp1252)


def check_generated(case: tuple[bytes, list[dict[str, Any]]]) -> None:
    data, specs = case
    entries = check_parse(data)
    usable = all(as_feedparser_keeps(s["id"]) for s in specs) and all(
        s["updated"][1] is not None for s in specs
    )
    if usable:
        assert entries is not None, "a sound page was refused"
    if entries is None:
        return
    assert len(entries) == len(specs)
    for e, s in zip(entries, specs):
        assert e.id == as_feedparser_keeps(s["id"])
        if s["updated"][1] is not None:
            assert e.updated_ms == s["updated"][1], (s["updated"][0], e.updated_ms)
        content = as_feedparser_keeps(s["content"])
        assert e.content_raw == content
        assert e.content_error == decode_content(content).error
        if e.content_error is None:
            assert e.context == _context_of(content)


def _context_of(text: str) -> Any:
    context = json.loads(text).get("Context", [])
    return [context] if isinstance(context, dict) else context


@fuzz(generated_pages(), CASES)
def test_generated_pages(case: tuple[bytes, list[dict[str, Any]]]) -> None:
    check_generated(case)


@pytest.mark.soak
@fuzz(generated_pages(), SOAK_CASES)
def test_generated_pages_soak(case: tuple[bytes, list[dict[str, Any]]]) -> None:
    check_generated(case)


# --------------------------------------------------------------------------- the config

ENV = {"HCM_PASSWORD": "pw-from-env", "PAGE": "50", "EMPTY": "", "URL": "https://pod.example.com"}

SECTION_KEYS = {
    "hcm": [
        "base_url",
        "username",
        "password",
        "password_file",
        "page_size",
        "timeout_seconds",
        "connect_timeout_seconds",
        "verify_tls",
        "allow_insecure_http",
        "max_response_bytes",
        "max_connections",
    ],
    "poll": [
        "interval_seconds",
        "overlap_seconds",
        "sweep_interval_seconds",
        "sweep_lookback_seconds",
        "backoff_max_seconds",
        "shutdown_timeout_seconds",
    ],
    "state": ["dir", "retention_seconds"],
    "publisher": [
        "kind",
        "topic_id",
        "endpoint",
        "auth",
        "oci_config_file",
        "oci_profile",
        "max_messages_per_minute",
        "timeout_seconds",
        "on_permanent_failure",
        "url",
        "hmac_secret",
        "bearer_token",
    ],
    "logging": ["level", "format", "file"],
    "metrics": ["listen", "textfile"],
}
FEED_KEYS = ["name", "collection", "workspace", "path", "cursor", "start_at", "topic_id", "title"]
# Misspelt, foreign or odd keys.
ODD_KEYS = ["pasword", "page-size", "Page_Size", "interval", "x", "", " ", "ü", "a.b", "0", "~"]

# Values drawn from lists, not built up piece by piece: generation is most of the time spent.
SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    25,
    1000,
    1001,
    4095,
    2**31,
    2**40,
    0.5,
    -0.0,
    1e309,
    float("nan"),
    "",
    " ",
    "x",
    "true",
    "no",
    "25",
    "0.5",
    "-3",
    "1e3",
    "https://pod.fa.us-ashburn-1.oraclecloud.com",
    "https://pod.fa.us-ashburn-1.oraclecloud.com/",
    "http://127.0.0.1:8080",
    "http://[::1]:8080",
    "http://pod.example.com",
    "https://user:pw@pod.example.com",
    "https://pod.example.com/path",
    "https://",
    "ftp://x",
    "now",
    "beginning",
    "2024-03-04T00:00:00Z",
    "2024-03-04",
    "2024-13-45",
    "0999-12-31T23:59:59Z",
    "newhire",
    "empupdate",
    "newhires",
    "Jobs",
    "new hire",
    "updated",
    "published",
    "oci_notifications",
    "webhook",
    "stdout",
    "instance_principal",
    "halt",
    "DEBUG",
    "json",
    "127.0.0.1:9464",
    ":0",
    "host:99999",
    "ocid1.onstopic.oc1..aaaa",
    "{PersonName} hired",
    "{unclosed",
    "{0!z}",
    "/nonexistent/file",
    "relative/dir",
    "~/x",
    ".",
    "${HCM_PASSWORD}",
    "${MISSING}",
    "${}",
    "${1BAD}",
    "${PAGE}",
    "${EMPTY}",
    "$$",
    "$${HCM_PASSWORD}",
    "${URL}",
    "pre-${PAGE}-post",
    "${HCM_PASSWORD",
    "$",
    "${A}${B}",
    "ü-ñ-☺",
    "line\nbreak",
    "\t",
]
STRUCTURES: list[Any] = [
    [],
    {},
    ["newhire"],
    ["newhire", "newhire"],
    [None],
    [1, "x"],
    [{"name": "newhire"}, {"name": "jobs", "cursor": "published"}],
    [{"name": "x", "workspace": "custom"}],
    [{"name": "newhire", "filter": {"WorkerType": ["EMP", "CWK"]}}],
    [{"name": "newhire", "filter": {"WorkerType": []}}],
    [{"name": "newhire", "filter": "EMP"}],
    {"a": 1},
    {"a": {"b": [1, {"c": None}]}},
    [[["deep"]]],
    {"WorkerType": "EMP"},
]
_keys = st.sampled_from(
    sorted({k for keys in SECTION_KEYS.values() for k in keys} | {*FEED_KEYS, *ODD_KEYS})
)
_scalars = st.sampled_from(SCALARS)
_values = st.one_of(
    _scalars,
    st.sampled_from(STRUCTURES).map(copy.deepcopy),  # drawn objects get edited
    st.lists(_scalars, max_size=3),
    st.dictionaries(_keys, _scalars, max_size=3),
)

VALID = {
    "hcm": {
        "base_url": "https://pod.fa.us-ashburn-1.oraclecloud.com",
        "username": "INTEGRATION_USER",
        "password": "${HCM_PASSWORD}",
    },
    "publisher": {"topic_id": "ocid1.onstopic.oc1..aaaa"},
}
SECTIONS = [*SECTION_KEYS, "feeds", "unknown_section"]


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """Mostly a valid configuration with a few keys changed, added or removed; sometimes a
    random structure; sometimes not a mapping at all."""
    shape = draw(st.sampled_from(["edited", "edited", "edited", "random", "scalar"]))
    if shape == "scalar":
        return draw(_values)
    doc: dict[str, Any] = json.loads(json.dumps(VALID)) if shape == "edited" else {}
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.sampled_from(SECTIONS))
        if section == "feeds":
            doc["feeds"] = draw(_values)
        elif section == "unknown_section":
            doc[draw(st.sampled_from(ODD_KEYS))] = draw(_values)
        elif isinstance(doc.get(section), dict) and draw(st.booleans()):
            key = draw(st.sampled_from(SECTION_KEYS[section] + ODD_KEYS))
            if draw(st.booleans()):
                doc[section].pop(key, None)
            else:
                doc[section][key] = draw(_values)
        else:
            keys = st.sampled_from(SECTION_KEYS[section] + ODD_KEYS)
            doc[section] = draw(st.dictionaries(keys, _values, max_size=4) | _values)
    return doc


def check_config(text: str) -> None:
    error: Optional[ConfigError] = None
    try:
        cfg = config.parse(text, env=ENV)
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert isinstance(error.key, str) and error.message.strip(), repr(error)
        assert str(error) == (f"{error.key}: {error.message}" if error.key else error.message)
        assert "\n" not in error.message or error.key == "", repr(error)
        return
    assert isinstance(cfg, config.Config)
    assert cfg.feeds and cfg.hcm.base_url.startswith(("http://", "https://"))
    assert 1 <= cfg.hcm.page_size <= 1000
    assert not math.isnan(cfg.poll.interval_seconds) and cfg.poll.interval_seconds > 0


@fuzz(documents(), CASES)
def test_config_documents(doc: Any) -> None:
    check_config(yaml.safe_dump(doc, allow_unicode=True))


@pytest.mark.soak
@fuzz(documents(), SOAK_CASES)
def test_config_documents_soak(doc: Any) -> None:
    check_config(yaml.safe_dump(doc, allow_unicode=True))


@fuzz(st.text(max_size=300), CASES // 2)
def test_config_random_text(text: str) -> None:
    check_config(text)


# Deep nesting, recursive aliases and alias bombs: a ConfigError at once, never a Python error.

_NESTED = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize("text", [_NESTED, "hcm: &a\n  x: *a\n", "feeds: &a [*a]\n"])
def test_config_deep_or_recursive_yaml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        config.parse(text, env=ENV)


_BOMB = """
import sys
from atomsync import config
lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
for i in range(1, 7):
    lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
lines.append("hcm: {base_url: *a6}")
try:
    config.parse("\\n".join(lines), env={})
except config.ConfigError as exc:
    print(exc)
"""


def test_config_alias_bomb_is_refused_at_once() -> None:
    subprocess.run([sys.executable, "-c", _BOMB], timeout=2, check=True, capture_output=True)
