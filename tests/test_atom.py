"""The pure parser: golden pages, exact timestamps, and refusal of anything partial."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomsync.atom import FeedError, context_value, decode_content, parse
from atomsync.timeutil import format_ms

DATA = Path(__file__).parent / "data"


def test_reference_newhire_page() -> None:
    [e] = parse((DATA / "newhire.xml").read_bytes())
    assert e.id == "atomservlet:newhire:EMP300100555000111"
    assert format_ms(e.updated_ms or 0) == "2024-03-04T09:15:22.000Z"
    assert e.published_ms == e.updated_ms
    assert e.title == "Jane Roe Hired"
    assert e.summary == "Employee Period of Service Created"
    assert e.author == "HR.SPECIALIST"
    assert e.links["edit"].endswith("/employee/newhire/EMP300100555000111")
    assert e.links["related"].endswith("/workers/00020000000EACED0005770800011174D2E9")
    assert e.context[0]["PersonNumber"] == "10457"  # IDs stay strings
    assert e.context[0]["PersonId"] == "300100555000100"
    assert e.changed_attributes == [] and e.flexfields == [] and e.content_error is None
    assert e.key("updated") == "atomservlet:newhire:EMP300100555000111@2024-03-04T09:15:22.000Z"


def test_milliseconds_escaping_changed_attributes_and_spaced_keys() -> None:
    upd, job, broken = parse((DATA / "mixed.xml").read_bytes())
    assert format_ms(upd.updated_ms or 0) == "2024-05-01T00:00:00.123Z"
    assert format_ms(upd.published_ms or 0) == "2024-03-04T09:15:22.456Z"
    assert upd.title == "Zoë O'Brien & Co's Basic Information Updated"
    assert upd.context[0]["Note"] == '<b> & "quoted"'
    assert upd.changed_attributes == [{"LastName": {"old": "Roe", "new": "O'Brien"}}]
    assert upd.flexfields[0]["Changed Attributes"] == [
        {"badgeColour": {"old": "Blue", "new": "Green"}}
    ]
    assert job.context[0]["Job Id"] == "300100612345678"
    assert context_value(job, "Job Id") == context_value(job, "Job Id") == "300100612345678"
    assert job.changed_attributes == [{"Name": "Payroll Clerk"}]  # value-only shape
    assert format_ms(job.updated_ms or 0) == "2024-05-01T00:00:01.000Z"  # no ms sent
    # Unreadable content is still an event: raw text kept, flagged.
    assert broken.content_error is not None and "not valid JSON" in broken.content_error
    assert broken.content_raw.startswith('{ "Context"') and broken.context == []
    assert broken.published_ms is None and broken.links == {}


def test_context_value_accepts_both_spellings() -> None:
    [e] = parse(
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>x</id>'
        b"<updated>2024-01-01T00:00:00.000Z</updated>"
        b'<content type="text">{"Context":[{"JobId":"7"}]}</content></entry></feed>'
    )
    assert context_value(e, "Job Id") == "7"
    assert context_value(e, "Missing") is None


def test_truncated_document_never_yields_a_partial_page() -> None:
    data = (DATA / "mixed.xml").read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 20):
        with pytest.raises(FeedError, match="not well-formed"):
            parse(data[:cut])


def test_html_login_page_is_refused() -> None:
    with pytest.raises(FeedError, match="HTML page"):
        parse(b"<html><head><title>Sign In</title></head><body><form></form></body></html>")


@pytest.mark.parametrize(
    "body",
    [b"", b"{}", b"<rss version='2.0'><channel></channel></rss>", b"garbage"],
)
def test_non_atom_documents_are_refused(body: bytes) -> None:
    with pytest.raises(FeedError):
        parse(body)


def test_empty_feed_is_an_empty_page() -> None:
    assert parse(b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title></feed>') == []


def test_encoding_override_is_benign() -> None:
    doc = (
        b'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        b"<entry><id>caf\xe9</id><updated>2024-01-01T00:00:00.000Z</updated></entry></feed>"
    )
    [e] = parse(doc)
    assert e.id == "café"


def test_entry_without_id_or_cursor_fails_the_page() -> None:
    head = b'<feed xmlns="http://www.w3.org/2005/Atom"><entry>'
    with pytest.raises(FeedError, match="without an <id>"):
        parse(head + b"<updated>2024-01-01T00:00:00Z</updated></entry></feed>")
    with pytest.raises(FeedError, match="no <updated>"):
        # feedparser would map <published> into `updated`; the parser must not.
        parse(head + b"<id>a</id><published>2024-01-01T00:00:00Z</published></entry></feed>")
    with pytest.raises(FeedError, match="unreadable <updated>"):
        parse(head + b"<id>a</id><updated>yesterday</updated></entry></feed>")
    with pytest.raises(FeedError, match="no <published>"):
        parse(
            head + b"<id>a</id><updated>2024-01-01T00:00:00Z</updated></entry></feed>", "published"
        )


def test_decode_content_cases() -> None:
    assert decode_content('{"Context": {"A": "1"}}').context == [{"A": "1"}]
    assert decode_content("[1, 2]").error == "content JSON is not an object"
    assert decode_content("").error == "empty content"
    bad = decode_content('{"Context": "x", "FlexFields": {}}')
    assert bad.error == "Context is not a list of objects; FlexFields is not a list"
    deep = decode_content("[" * 100_000 + "]" * 100_000)
    assert deep.error is not None
