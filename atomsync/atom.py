"""HCM Atom entries, and the pure parser `parse(bytes, cursor) -> list[Entry]`.

No I/O here. A page either parses completely or raises FeedError: a truncated or malformed
document must never yield a partial page, because the protocol would then skip the rest.
Timestamps are read from the raw strings (feedparser's `*_parsed` fields drop milliseconds).

Hostile documents (docs/hostile-input.md). HCM never sends a DTD, so any document that
declares one, or entities, is refused before feedparser sees it. The screen is ours, not
defusedxml's, because the danger is in feedparser rather than in an XML parser: feedparser 6
rewrites the DOCTYPE with regular expressions over the raw text (keeping "safe" text
entities) and, when the strict parse fails, hands those entities to its own loose parser,
which expands them without any limit. A DTD hidden in a comment is invisible to every XML
parser, defusedxml included, yet feedparser's rewrite finds it: 50 KB could take 600 MB.
So the screen looks at exactly the bytes feedparser parses (after its own character-set
conversion) and refuses any `<!DOCTYPE` or `<!ENTITY` in them. Nothing can then be expanded,
by expat or by the loose parser, and no external entity can be read. feedparser also gets a
stream, never the bytes: given bytes it first tries them as a file name to open.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional
from xml.parsers import expat

from atomsync.timeutil import format_ms, parse_timestamp


class FeedError(Exception):
    """The response cannot be trusted as a feed page; the cycle fails, the watermark stays."""


class HtmlPageError(FeedError):
    """The response is an HTML page (a sign-in page, as a rule), not a feed."""


# Any DTD or entity declaration, as the parsers would see it (they are case-sensitive; the
# screen is not, which costs nothing: a feed can only hold these words escaped).
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_HTML_ROOT = re.compile(rb"<(?:!doctype\s+html|html)[\s>/]", re.IGNORECASE)


@dataclass(frozen=True)
class Entry:
    """One HCM event, as read from the feed."""

    id: str
    updated_ms: Optional[int]
    published_ms: Optional[int]
    title: str = ""
    summary: str = ""
    author: str = ""
    links: dict[str, str] = field(default_factory=dict)
    context: list[dict[str, Any]] = field(default_factory=list)
    changed_attributes: list[Any] = field(default_factory=list)
    flexfields: list[Any] = field(default_factory=list)
    content_raw: str = ""
    # None when the content JSON was read; otherwise why not (the event is still published).
    content_error: Optional[str] = None

    def cursor_ms(self, cursor: str) -> int:
        value = self.updated_ms if cursor == "updated" else self.published_ms
        if value is None:  # parse() guarantees the cursor field; this guards misuse
            raise FeedError(f"entry {self.id} has no <{cursor}> timestamp")
        return value

    def key(self, cursor: str) -> str:
        """The event key: the same id with a new timestamp is a new event."""
        return event_key(self.id, self.cursor_ms(cursor))


def event_key(entry_id: str, cursor_ms: int) -> str:
    return f"{entry_id}@{format_ms(cursor_ms)}"


def parse(data: bytes, cursor: str = "updated") -> list[Entry]:
    """Parse one Atom page. Raises FeedError unless the whole document is a sound feed."""
    import feedparser  # deferred: `status` and `--help` never parse feeds

    text, idle = _screen(data)
    if idle:  # the answer to every idle poll: no need for feedparser's ten times the time
        return []
    try:
        doc = feedparser.parse(io.BytesIO(text), sanitize_html=False, resolve_relative_uris=False)
    except Exception as err:  # a parser bug on hostile input: the page is not trustworthy
        raise FeedError(
            f"HCM sent a document feedparser cannot read ({type(err).__name__})"
        ) from None
    if doc.get("bozo"):
        exc = doc.get("bozo_exception")
        # A declared/actual encoding mismatch is recovered from losslessly enough to use;
        # anything else (not well-formed, truncated, entity tricks) fails the page.
        if not isinstance(exc, feedparser.CharacterEncodingOverride):
            raise FeedError(f"HCM sent a document that is not well-formed XML ({exc})")
    version = doc.get("version") or ""
    if not version.startswith("atom"):
        if b"<html" in data[:2048].lower():
            raise HtmlPageError("HCM sent an HTML page, not an Atom feed (a login page?)")
        raise FeedError(f"HCM sent a document that is not an Atom feed ({version or 'unknown'})")
    return [_entry(raw, cursor) for raw in doc.get("entries", [])]


def _screen(data: bytes) -> tuple[bytes, bool]:
    """The document as feedparser will parse it (UTF-8, by feedparser's own conversion),
    once it is known to be neither an HTML page nor a document with a DTD; and whether it is
    a well-formed Atom feed without a single entry."""
    import feedparser
    from feedparser.encodings import convert_to_utf8

    if not data.strip():
        raise FeedError("HCM sent an empty answer instead of a feed")
    found: dict[str, Any] = {}
    unknown = FeedError("HCM sent a document in a character encoding atomsync cannot tell")
    try:
        text: bytes = convert_to_utf8({}, data, found)
    except Exception:  # e.g. ValueError for an encoding name holding a NUL
        raise unknown from None
    if isinstance(found.get("bozo_exception"), feedparser.CharacterEncodingUnknown):
        raise unknown
    if _HTML_ROOT.match(text, _prolog_end(text)):
        raise HtmlPageError("HCM sent an HTML page, not an Atom feed (a login page?)")
    if _DTD.search(text):
        raise FeedError(
            "HCM sent a document with a DTD (<!DOCTYPE or <!ENTITY), which HCM feeds never "
            "have: refused as not well-formed, so that no entity is ever expanded"
        )
    return text, _check_shape(text)


# Far beyond any HCM page (depth 4, at most 3 attributes), far below what hurts feedparser.
MAX_DEPTH = 64
MAX_ATTRIBUTES = 64


class _Shape(Exception):
    pass


def _check_shape(text: bytes) -> bool:
    """Refuse, with expat alone (fast, small), what is not well-formed or is shaped to hurt
    feedparser: its loose parser, which runs whenever the strict one fails, can take a GB
    for 10 MB; its handling of attributes is quadratic (a million attributes on one element
    would take hours); deep nesting costs hundreds of bytes a level. A document that passes
    here also passes feedparser's strict parser, so the loose one never runs.

    Returns True for an Atom feed without any element named `entry` (in any namespace or
    case): such a page has nothing for feedparser to find."""
    depth = 0
    names: list[str] = []  # the root, then any element whose local name is "entry"

    def start(name: str, attrs: list[str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise _Shape(f"elements nested more than {MAX_DEPTH} deep")
        if len(attrs) > 2 * MAX_ATTRIBUTES:
            raise _Shape(f"an element with {len(attrs) // 2} attributes")
        if not names or name.rpartition(" ")[2].lower() == "entry":
            names.append(name)

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    parser = expat.ParserCreate(namespace_separator=" ")  # namespaces, as feedparser's
    parser.ordered_attributes = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise FeedError(f"HCM sent a document that is not well-formed XML ({exc})") from None
    except _Shape as exc:
        raise FeedError(f"HCM sent a document no feed looks like ({exc})") from None
    return names == [_ATOM_FEED]


def _prolog_end(text: bytes) -> int:
    """Where the first markup after the XML declaration, comments and processing
    instructions begins (a plain scan: a regular expression could backtrack for ages)."""
    pos, size = 0, len(text)
    while True:
        while pos < size and text[pos] in b" \t\r\n":
            pos += 1
        if text.startswith(b"<?", pos):
            end, step = text.find(b"?>", pos + 2), 2
        elif text.startswith(b"<!--", pos):
            end, step = text.find(b"-->", pos + 4), 3
        else:
            return pos
        if end < 0:
            return pos
        pos = end + step


_ATOM_FEED = "http://www.w3.org/2005/Atom feed"  # expat's "namespace localname"


def _timestamp(text: str) -> int:
    """An ISO 8601 time as epoch ms, only if it survives the round trip through the form
    atomsync writes (keys, watermark, messages): a year past 9999 in UTC cannot be written,
    and one that could not be read back would make the state file unreadable."""
    ms = parse_timestamp(text)
    if parse_timestamp(format_ms(ms)) != ms:
        raise ValueError(f"{text!r} does not survive being written and read back")
    return ms


def _entry(raw: Any, cursor: str) -> Entry:
    # dict.get, not raw.get: feedparser maps a missing `updated` to `published` (and would
    # silently move the watermark on the wrong field).
    entry_id = (dict.get(raw, "id") or "").strip()
    if not entry_id:
        stamp = dict.get(raw, cursor)
        where = f" (its <{cursor}> is {stamp})" if stamp else ""
        raise FeedError(f"HCM sent an entry without an <id>{where}: the page is refused")
    stamps: dict[str, Optional[int]] = {}
    for name in ("updated", "published"):
        text = dict.get(raw, name)
        try:
            stamps[name] = _timestamp(text) if text else None
        except (ValueError, OverflowError):
            if name == cursor:
                raise FeedError(
                    f"entry {entry_id} has an unreadable <{name}> {text!r} (not an ISO 8601 "
                    "time atomsync can keep): the page is refused"
                ) from None
            stamps[name] = None
    if stamps[cursor] is None:
        raise FeedError(f"entry {entry_id} has no <{cursor}> timestamp: the page is refused")

    links = {}
    for link in dict.get(raw, "links") or []:
        rel, href = link.get("rel"), link.get("href")
        if rel and href and rel not in links:
            links[rel] = href
    contents = dict.get(raw, "content") or []
    content_raw = contents[0].get("value", "") if contents else ""
    detail = dict.get(raw, "author_detail") or {}

    fields = decode_content(content_raw)
    return Entry(
        id=entry_id,
        updated_ms=stamps["updated"],
        published_ms=stamps["published"],
        title=dict.get(raw, "title") or "",
        summary=dict.get(raw, "summary") or "",
        author=detail.get("name") or dict.get(raw, "author") or "",
        links=links,
        context=fields.context,
        changed_attributes=fields.changed_attributes,
        flexfields=fields.flexfields,
        content_raw=content_raw,
        content_error=fields.error,
    )


@dataclass
class ContentFields:
    context: list[dict[str, Any]] = field(default_factory=list)
    changed_attributes: list[Any] = field(default_factory=list)
    flexfields: list[Any] = field(default_factory=list)
    error: Optional[str] = None


def decode_content(text: str) -> ContentFields:
    """Decode HCM's content JSON. Never raises: what cannot be read is reported in `error`."""
    out = ContentFields()
    if not text.strip():
        out.error = "empty content"
        return out
    try:
        doc = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and RecursionError-free inputs too
        out.error = f"content is not valid JSON ({exc})"
        return out
    except RecursionError:
        out.error = "content JSON is nested too deeply"
        return out
    if not isinstance(doc, dict):
        out.error = "content JSON is not an object"
        return out
    problems = []
    context = doc.get("Context", [])
    if isinstance(context, dict):  # one object where a list of one was expected
        context = [context]
    if isinstance(context, list) and all(isinstance(c, dict) for c in context):
        out.context = context
    else:
        problems.append("Context is not a list of objects")
    for key, attr in (("Changed Attributes", "changed_attributes"), ("FlexFields", "flexfields")):
        value = doc.get(key, [])
        if isinstance(value, list):
            setattr(out, attr, value)
        else:
            problems.append(f"{key} is not a list")
    if problems:
        out.error = "; ".join(problems)
    return out


def context_value(entry: Entry, name: str) -> Optional[str]:
    """A Context field, tolerating the spaced and unspaced spellings (`Job Id`/`JobId`)."""
    alt = name.replace(" ", "") if " " in name else None
    for obj in entry.context:
        if name in obj:
            return _text(obj[name])
        if alt is not None and alt in obj:
            return _text(obj[alt])
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
