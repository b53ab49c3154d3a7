"""The message contract and deterministic trimming to OCI Notifications' size limit."""

from __future__ import annotations

import json

import pytest

from atomsync.atom import Entry
from atomsync.message import MessageTooLarge, build, render_title, request_size

T0 = 1_709_543_722_000


def hire(**kw: object) -> Entry:
    base: dict[str, object] = {
        "id": "atomservlet:newhire:EMP300100555000111",
        "updated_ms": T0,
        "published_ms": T0,
        "title": "Jane Roe Hired",
        "summary": "Employee Period of Service Created",
        "author": "HR.SPECIALIST",
        "links": {"edit": "https://pod/e", "related": "https://pod/r"},
        "context": [
            {"PersonId": "300100555000100", "PersonNumber": "10457", "PersonName": "Roe, Jane"}
        ],
    }
    base.update(kw)
    return Entry(**base)  # type: ignore[arg-type]


def test_body_follows_the_contract() -> None:
    msg = build(
        hire(),
        feed="newhire",
        workspace="employee",
        cursor="updated",
        title_template="New hire: {display_name} ({PersonNumber})",
    )
    assert msg.title == "New hire: Jane Roe (10457)"
    body = json.loads(msg.body_text())
    assert body == {
        "id": "atomservlet:newhire:EMP300100555000111",
        "feed": "newhire",
        "workspace": "employee",
        "updated": "2024-03-04T09:15:22.000Z",
        "published": "2024-03-04T09:15:22.000Z",
        "title": "Jane Roe Hired",
        "summary": "Employee Period of Service Created",
        "author": "HR.SPECIALIST",
        "links": {"edit": "https://pod/e", "related": "https://pod/r"},
        "context": [
            {"PersonId": "300100555000100", "PersonNumber": "10457", "PersonName": "Roe, Jane"}
        ],
        "changed_attributes": [],
        "flexfields": [],
        "content_parsed": True,
    }
    assert msg.key == "atomservlet:newhire:EMP300100555000111@2024-03-04T09:15:22.000Z"


def test_unparsed_content_is_published_with_raw_text_and_a_flag() -> None:
    e = hire(
        context=[], content_raw='{"Context": [ broken', content_error="content is not valid JSON"
    )
    body = build(e, feed="newhire", workspace="employee", cursor="updated").body
    assert body["content_parsed"] is False and body["content_raw"] == '{"Context": [ broken'
    assert body["content_error"] == "content is not valid JSON"


@pytest.mark.parametrize(
    ("template", "context", "expected"),
    [
        (
            "New hire: {display_name} ({PersonNumber})",
            {"PersonName": "Roe, Jane", "PersonNumber": "1"},
            "New hire: Jane Roe (1)",
        ),
        ("New hire: {display_name} ({PersonNumber})", {"PersonName": "Cher"}, "New hire: Cher"),
        ("Job {action}: {Name}", {"Name": "Clerk", "DMLOperation": "DELETE"}, "Job deleted: Clerk"),
        (
            "Location {action}: {Location Name}",
            {"LocationName": "HQ", "DMLOperation": "INSERT"},
            "Location created: HQ",
        ),
        ("Job {action}: {Name}", {"DMLOperation": "UPDATE"}, ""),  # nothing but the action
        ("{PersonNumber!r:>6}", {"PersonNumber": "7"}, "'7'"),
    ],
)
def test_titles(template: str, context: dict[str, str], expected: str) -> None:
    assert render_title(template, hire(context=[context])) == expected


def test_title_falls_back_to_the_atom_title() -> None:
    msg = build(
        hire(context=[]),
        feed="newhire",
        workspace="employee",
        cursor="updated",
        title_template="New hire: {display_name} ({PersonNumber})",
    )
    assert msg.title == "Jane Roe Hired"


def test_trimming_is_deterministic_and_listed() -> None:
    big = [{"Attr": "x" * 1000} for _ in range(70)]
    e = hire(changed_attributes=big, flexfields=big)
    msg = build(e, feed="empupdate", workspace="employee", cursor="updated")
    assert msg.body["trimmed"] == ["flexfields", "changed_attributes"]
    assert request_size(msg.title, msg.body_text()) <= 60_000
    again = build(e, feed="empupdate", workspace="employee", cursor="updated")
    assert again.body_text() == msg.body_text()


def test_non_ascii_is_measured_as_the_sdk_sends_it() -> None:
    # 9,000 "ø" are 9,000 characters but 54,000 bytes once the SDK escapes them.
    e = hire(context=[{"Note": "ø" * 9_000}, {"More": "ø" * 9_000}])
    msg = build(e, feed="empupdate", workspace="employee", cursor="updated")
    assert msg.body["trimmed"] == ["context[1:]"]
    wire = json.dumps({"title": msg.title, "body": msg.body_text()}).encode()
    assert len(wire) == request_size(msg.title, msg.body_text()) <= 60_000


def test_raw_content_is_cut_to_fit() -> None:
    e = hire(context=[], content_raw='"' * 50_000, content_error="content is not valid JSON")
    msg = build(e, feed="newhire", workspace="employee", cursor="updated")
    assert msg.body["trimmed"] == ["content_raw"]
    assert msg.body["content_raw"].endswith("…[cut]")
    assert 55_000 < request_size(msg.title, msg.body_text()) <= 60_000


def test_too_large_even_after_trimming() -> None:
    with pytest.raises(MessageTooLarge, match="even after trimming"):
        build(hire(summary="s" * 70_000), feed="newhire", workspace="employee", cursor="updated")


def test_long_titles_are_shortened() -> None:
    msg = build(
        hire(title="T" * 500, context=[]), feed="newhire", workspace="employee", cursor="updated"
    )
    assert len(msg.title) == 200 and msg.title.endswith("…")
