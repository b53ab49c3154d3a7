"""HCM Atom entries, and the pure parser `parse(bytes, cursor) -> list[Entry]`.

No I/O here. A page either parses completely or raises FeedError: a truncated or malformed
document must never yield a partial page, because the protocol would then skip the rest.
Timestamps are read from the raw strings (feedparser's `*_parsed` fields drop milliseconds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from atomsync.timeutil import format_ms, parse_timestamp


class FeedError(Exception):
    """The response cannot be trusted as a feed page; the cycle fails, the watermark stays."""


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

    doc = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    if doc.get("bozo"):
        exc = doc.get("bozo_exception")
        # A declared/actual encoding mismatch is recovered from losslessly enough to use;
        # anything else (not well-formed, truncated, entity tricks) fails the page.
        if not isinstance(exc, feedparser.CharacterEncodingOverride):
            raise FeedError(f"HCM sent a document that is not well-formed XML ({exc})")
    version = doc.get("version") or ""
    if not version.startswith("atom"):
        if b"<html" in data[:2048].lower():
            raise FeedError("HCM sent an HTML page, not an Atom feed (a login page?)")
        raise FeedError(f"HCM sent a document that is not an Atom feed ({version or 'unknown'})")
    return [_entry(raw, cursor) for raw in doc.get("entries", [])]


def _entry(raw: Any, cursor: str) -> Entry:
    # dict.get, not raw.get: feedparser maps a missing `updated` to `published` (and would
    # silently move the watermark on the wrong field).
    entry_id = (dict.get(raw, "id") or "").strip()
    if not entry_id:
        raise FeedError("HCM sent an entry without an <id>")
    stamps: dict[str, Optional[int]] = {}
    for name in ("updated", "published"):
        text = dict.get(raw, name)
        try:
            stamps[name] = parse_timestamp(text) if text else None
        except (ValueError, OverflowError):
            if name == cursor:
                raise FeedError(f"entry {entry_id} has an unreadable <{name}> {text!r}") from None
            stamps[name] = None
    if stamps[cursor] is None:
        raise FeedError(f"entry {entry_id} has no <{cursor}> timestamp")

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
