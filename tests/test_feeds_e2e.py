"""Every HCM feed, routing, the webhook and stdout sinks, replay: end to end via the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from atomsync import catalog
from atomsync.sim.sandbox import Sandbox
from atomsync.timeutil import format_ms
from tests.conftest import atomsync, entry_keys

pytestmark = pytest.mark.slow

TITLE_PREFIX = {
    "newhire": "New hire: ",
    "empassignment": "Assignment changed: ",
    "empupdate": "Person updated: ",
    "payupdate": "Payroll updated: ",
    "termination": "Terminated: ",
    "cancelworkrelship": "Work relationship cancelled: ",
    "workrelshipupdate": "Work relationship updated: ",
    "grades": "Grade ",
    "jobs": "Job ",
    "locations": "Location ",
    "organizations": "Organization ",
    "positions": "Position ",
    "availabilityPatternChange": "Availability changed: ",
}


def test_all_13_feeds_with_3_entries_each_give_39_readable_messages(sandbox: Sandbox) -> None:
    assert set(TITLE_PREFIX) == set(catalog.COLLECTIONS)
    base = sandbox.hcm.now_ms() - 60_000
    for i, name in enumerate(catalog.COLLECTIONS):
        for j, dml in enumerate(("INSERT", "UPDATE", "DELETE")):
            sandbox.hcm.add_entry(name, updated_ms=base + i * 100 + j, dml=dml)
    feeds = [{"name": name, "start_at": "beginning"} for name in catalog.COLLECTIONS]
    config = sandbox.write_config(feeds=feeds)
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    assert len(sandbox.ons.accepted) == 39 and sandbox.ons.rejected == []
    seen: dict[str, int] = {}
    for msg in sandbox.ons.accepted:
        body = json.loads(msg.body)
        feed = body["feed"]
        seen[feed] = seen.get(feed, 0) + 1
        assert body["workspace"] == catalog.COLLECTIONS[feed].workspace
        assert body["id"].startswith(f"atomservlet:{feed}:")
        assert msg.title.startswith(TITLE_PREFIX[feed]), msg.title
        assert (
            "{" not in msg.title
            and "()" not in msg.title
            and len(msg.title) > len(TITLE_PREFIX[feed]) + 2
        )
        assert body["context"] and body["content_parsed"] is True
    assert seen == {name: 3 for name in catalog.COLLECTIONS}
    workstructure = [json.loads(m.body) for m in sandbox.ons.accepted if "Job " in m.title]
    assert {
        t.split(":")[0]
        for t in (m.title for m in sandbox.ons.accepted if m.title.startswith("Job "))
    } == {
        "Job created",
        "Job updated",
        "Job deleted",
    }
    assert any(
        "Job Id" in ctx for body in workstructure for ctx in body["context"]
    )  # spaced keys kept


def test_each_feed_to_its_own_topic(sandbox: Sandbox) -> None:
    other = "ocid1.onstopic.oc1.iad.aaaaaaaaleavers"
    sandbox.ons.add_topic(other, name="leavers")
    now = sandbox.hcm.now_ms() - 10_000
    sandbox.hcm.add_entry("newhire", updated_ms=now)
    sandbox.hcm.add_entry("termination", updated_ms=now + 1)
    feeds = [
        {"name": "newhire", "start_at": "beginning"},
        {"name": "termination", "start_at": "beginning", "topic_id": other},
    ]
    assert atomsync("-c", str(sandbox.write_config(feeds=feeds)), "once").returncode == 0
    where = {json.loads(m.body)["feed"]: m.topic_id for m in sandbox.ons.accepted}
    assert where == {"newhire": sandbox.topic_id, "termination": other}


def test_legacy_path_and_position_alias(sandbox: Sandbox) -> None:
    now = sandbox.hcm.now_ms() - 10_000
    sandbox.hcm.add_entry("positions", updated_ms=now)
    sandbox.hcm.add_entry("jobs", updated_ms=now)
    feeds = [
        {"name": "position", "start_at": "beginning"},
        {
            "name": "jobs-legacy",
            "collection": "jobs",
            "path": "/hcmCoreApi/atomservlet/workstructures/jobs",
            "start_at": "beginning",
        },
    ]
    assert atomsync("-c", str(sandbox.write_config(feeds=feeds)), "once").returncode == 0
    feeds_seen = sorted(json.loads(m.body)["feed"] for m in sandbox.ons.accepted)
    assert feeds_seen == ["jobs-legacy", "position"]
    assert any(r.path.startswith("/hcmCoreApi/") for r in sandbox.hcm.requests)


def test_filter_drops_events_while_the_watermark_moves(sandbox: Sandbox) -> None:
    now = sandbox.hcm.now_ms() - 30_000
    entries = [sandbox.hcm.add_entry("newhire", updated_ms=now + i * 10) for i in range(8)]
    kinds = {e.id: json.loads(e.content)["Context"][0]["WorkerType"] for e in entries}
    feeds = [{"name": "newhire", "start_at": "beginning", "filter": {"WorkerType": "EMP"}}]
    config = sandbox.write_config(feeds=feeds)
    assert atomsync("-c", str(config), "once").returncode == 0
    published = {json.loads(m.body)["id"] for m in sandbox.ons.accepted}
    assert published == {i for i, kind in kinds.items() if kind == "EMP"}
    assert 0 < len(published) < len(entries), "the sample needs both kinds"
    state = json.loads((sandbox.dir / "state" / "newhire.state.json").read_text())
    assert state["watermark"] == format_ms(max(e.updated_ms for e in entries))


def test_replay_republishes_a_window_without_moving_the_live_watermark(sandbox: Sandbox) -> None:
    t0 = sandbox.hcm.now_ms() - 3_600_000
    entries = [sandbox.hcm.add_entry("newhire", updated_ms=t0 + i * 60_000) for i in range(6)]
    config = sandbox.write_config()
    assert atomsync("-c", str(config), "once").returncode == 0
    before = json.loads(atomsync("-c", str(config), "status", "--json").stdout)["feeds"]["newhire"]
    since, until = format_ms(t0 + 60_000), format_ms(t0 + 180_000)
    dry = atomsync(
        "-c", str(config), "replay", "newhire", "--since", since, "--until", until, "--dry-run"
    )
    assert dry.returncode == 0 and len(dry.stdout.splitlines()) == 3
    assert len(sandbox.ons.accepted) == 6
    result = atomsync("-c", str(config), "replay", "newhire", "--since", since, "--until", until)
    assert result.returncode == 0, result.stderr
    replayed = [json.loads(m.body)["id"] for m in sandbox.ons.accepted[6:]]
    assert replayed == [e.id for e in entries[1:4]]
    assert "replayed 3 events" in result.stderr
    after = json.loads(atomsync("-c", str(config), "status", "--json").stdout)["feeds"]["newhire"]
    assert after["watermark"] == before["watermark"] == format_ms(entries[-1].updated_ms)
    assert after["published"] == before["published"] == 6


def test_one_feed_failing_never_holds_up_the_others(sandbox: Sandbox) -> None:
    now = sandbox.hcm.now_ms() - 10_000
    for name in ("newhire", "termination", "jobs"):
        sandbox.hcm.add_entry(name, updated_ms=now)
    sandbox.hcm.inject("500", times=10, collection="termination")
    feeds = [{"name": n, "start_at": "beginning"} for n in ("newhire", "termination", "jobs")]
    config = sandbox.write_config(feeds=feeds)
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 1  # something failed ...
    assert sorted(json.loads(m.body)["feed"] for m in sandbox.ons.accepted) == ["jobs", "newhire"]
    failures = [line for line in result.stderr.splitlines() if "cycle failed" in line]
    assert len(failures) == 1 and failures[0].split(": ")[1].startswith("termination")
    status = json.loads(atomsync("-c", str(config), "status", "--json").stdout)["feeds"]
    assert (
        status["termination"]["watermark"] is None and "500" in status["termination"]["last_error"]
    )
    assert status["newhire"]["last_success"] and status["jobs"]["last_success"]
    sandbox.hcm.clear_faults()
    assert atomsync("-c", str(config), "once").returncode == 0
    assert len(sandbox.ons.accepted) == 3


def test_stdout_sink_prints_one_json_line_per_event(sandbox: Sandbox) -> None:
    sandbox.hcm.add_hires(3, updated_ms=sandbox.hcm.now_ms() - 5000, spacing_ms=1)
    config = sandbox.write_config(publisher={"kind": "stdout"})
    result = atomsync("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3 and all(line["title"].startswith("New hire: ") for line in lines)
    assert {f"{x['body']['id']}@{x['body']['updated']}" for x in lines} == entry_keys(sandbox)


# --------------------------------------------------------------------------- webhook


class Receiver:
    """A downstream REST endpoint that checks every HMAC signature."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                good = hmac.compare_digest(expected, self.headers.get("X-Atomsync-Signature", ""))
                doc = json.loads(body)
                if good and self.headers["X-Atomsync-Event-Id"] == doc["id"]:
                    receiver.accepted.append(doc)
                    self.send_response(204)
                else:
                    receiver.refused += 1
                    self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hcm-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver("w3bhook-s3cret-77")
    yield r
    r.close()


def test_webhook_signs_every_event_and_a_wrong_secret_is_refused(
    sandbox: Sandbox, receiver: Receiver, tmp_path: Path
) -> None:
    sandbox.hcm.add_hires(4, updated_ms=sandbox.hcm.now_ms() - 5000, spacing_ms=1)
    (tmp_path / "secret").write_text("wrong-secret\n")
    wrong = sandbox.write_config(
        tmp_path / "wrong.yaml",
        publisher={
            "kind": "webhook",
            "url": receiver.url,
            "hmac_secret_file": str(tmp_path / "secret"),
        },
    )
    result = atomsync("-c", str(wrong), "once")
    assert result.returncode == 1 and receiver.refused >= 1 and receiver.accepted == []
    assert "webhook answered 401" in result.stderr and "wrong-secret" not in result.stderr
    (tmp_path / "secret").write_text("w3bhook-s3cret-77\n")
    assert atomsync("-c", str(wrong), "once").returncode == 0
    assert {f"{d['id']}@{d['updated']}" for d in receiver.accepted} == entry_keys(sandbox)
    assert len(receiver.accepted) == 4
    assert all(d["feed"] == "newhire" and d["workspace"] == "employee" for d in receiver.accepted)
