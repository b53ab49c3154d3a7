"""The message contract (design.md §4): one message per HCM entry, a short human title and
a JSON body; and the deterministic trimming that makes any body fit OCI Notifications' 64 KB.

Trimming rule, applied in this order until the serialised request fits `MAX_REQUEST_BYTES`:
  1. drop `flexfields`, 2. drop `changed_attributes`, 3. cut `content_raw` (only present when
  the content did not parse), 4. keep only the first `context` object, 5. drop `context`.
Each step is listed in the body's `trimmed` key, so subscribers know to fetch the entry from
`links.edit`. A message that still does not fit (enormous title, summary or links) is
rejected for good and goes to the dead-letter file.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Any, Optional

from atomsync.atom import Entry
from atomsync.timeutil import format_optional

# The service says 64 KB without saying which KB or what is counted; measure the request the
# SDK sends (json.dumps defaults: \\uXXXX escapes, ", " separators) and keep a margin.
MAX_REQUEST_BYTES = 60_000
MAX_TITLE_CHARS = 200
_CUT_MARK = "…[cut]"


class MessageTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Message:
    feed: str
    entry_id: str
    key: str
    title: str
    body: dict[str, Any]
    topic_id: Optional[str] = None

    def body_text(self) -> str:
        # ensure_ascii=False: the SDK escapes non-ASCII once more when it serialises the
        # request, so escaping here too would cost a byte more per character.
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":"))


def request_size(title: str, body_text: str) -> int:
    """Bytes of the PublishMessage request exactly as the oci SDK serialises it."""
    return len(json.dumps({"title": title, "body": body_text}).encode("utf-8"))


def build(
    entry: Entry,
    *,
    feed: str,
    workspace: str,
    cursor: str,
    title_template: str = "",
    topic_id: Optional[str] = None,
    limit: int = MAX_REQUEST_BYTES,
) -> Message:
    body: dict[str, Any] = {
        "id": entry.id,
        "feed": feed,
        "workspace": workspace,
        "updated": format_optional(entry.updated_ms),
        "published": format_optional(entry.published_ms),
        "title": entry.title,
        "summary": entry.summary,
        "author": entry.author,
        "links": dict(entry.links),
        "context": entry.context,
        "changed_attributes": entry.changed_attributes,
        "flexfields": entry.flexfields,
        "content_parsed": entry.content_error is None,
    }
    if entry.content_error is not None:
        body["content_error"] = entry.content_error
        body["content_raw"] = entry.content_raw
    title = render_title(title_template, entry) or entry.title or entry.id
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1] + "…"
    msg = Message(feed, entry.id, entry.key(cursor), title, body, topic_id)
    return fit(msg, limit)


def fit(msg: Message, limit: int = MAX_REQUEST_BYTES) -> Message:
    """Apply the trimming rule (module docstring) until the request fits `limit` bytes."""
    if request_size(msg.title, msg.body_text()) <= limit:
        return msg
    body = dict(msg.body)
    trimmed: list[str] = []
    body["trimmed"] = trimmed

    def size() -> int:
        return request_size(msg.title, json.dumps(body, ensure_ascii=False, separators=(",", ":")))

    for step in ("flexfields", "changed_attributes"):
        if body.get(step):
            body[step] = []
            trimmed.append(step)
            if size() <= limit:
                return _with(msg, body)
    if body.get("content_raw"):
        raw: str = body["content_raw"]
        body["content_raw"] = ""
        trimmed.append("content_raw")
        spare = limit - size()
        if spare > 0:
            body["content_raw"] = _cut_to(raw, spare)
        if size() <= limit:
            return _with(msg, body)
    context = body.get("context") or []
    if len(context) > 1:
        body["context"] = context[:1]
        trimmed.append("context[1:]")
        if size() <= limit:
            return _with(msg, body)
    if body.get("context"):
        body["context"] = []
        trimmed.append("context")
        if size() <= limit:
            return _with(msg, body)
    raise MessageTooLarge(
        f"message for {msg.entry_id} is {size()} bytes even after trimming "
        f"({', '.join(trimmed) or 'nothing to trim'}); the limit is {limit}"
    )


def _with(msg: Message, body: dict[str, Any]) -> Message:
    return Message(msg.feed, msg.entry_id, msg.key, msg.title, body, msg.topic_id)


def _cut_to(text: str, budget: int) -> str:
    """The longest prefix whose serialised form (escapes counted twice over) fits `budget`."""
    lo, hi = 0, len(text)
    mark_cost = _serial_len(_CUT_MARK)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _serial_len(text[:mid]) + mark_cost <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + _CUT_MARK if lo else ""


def _serial_len(text: str) -> int:
    # A string inside the body (ensure_ascii=False), itself inside the request (ensure_ascii).
    inner = json.dumps(text, ensure_ascii=False)[1:-1]
    return len(json.dumps(inner)) - 2


# --------------------------------------------------------------------------- titles

_ACTIONS = {"INSERT": "created", "UPDATE": "updated", "DELETE": "deleted"}


class _Fields(dict[str, str]):
    """Template fields: Context values, with absent ones rendering as empty."""

    def __missing__(self, key: str) -> str:
        compact = key.replace(" ", "")
        return dict.get(self, compact, "") if compact != key else ""


def template_fields(entry: Entry) -> _Fields:
    fields = _Fields()
    for obj in reversed(entry.context):  # the first Context object wins
        for k, v in obj.items():
            fields[str(k)] = v if isinstance(v, str) else json.dumps(v)
    name = fields.get("PersonName", "")
    last, sep, first = name.partition(",")
    fields["display_name"] = f"{first.strip()} {last.strip()}".strip() if sep else name.strip()
    dml = fields.get("DMLOperation", "") or fields.get("Operation", "")
    fields["action"] = _ACTIONS.get(dml.upper(), "changed")
    return fields


def render_title(template: str, entry: Entry) -> str:
    """Fill the template from Context; "" when it yields nothing useful (caller falls back)."""
    if not template:
        return ""
    fields = template_fields(entry)
    formatter = string.Formatter()
    parts: list[str] = []
    filled = False
    try:
        for literal, name, spec, conv in formatter.parse(template):
            parts.append(literal)
            if name is None:
                continue
            value = fields[name]
            if value and name not in ("action",):
                filled = True
            parts.append(formatter.format_field(formatter.convert_field(value, conv), spec or ""))
    except (ValueError, KeyError, IndexError):
        return ""
    if not filled:
        return ""
    text = " ".join("".join(parts).replace("()", "").split())
    return text.strip(" :-")
