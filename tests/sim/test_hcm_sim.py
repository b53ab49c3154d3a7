"""The HCM Atom simulator, exercised over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import feedparser
import pytest
import requests

from atomsync import catalog
from atomsync.sim.hcm import HcmSimulator, RequestRecord
from atomsync.sim.hcmdata import EntryFactory, SimEntry
from atomsync.timeutil import format_ms, parse_timestamp

T0 = parse_timestamp("2024-03-04T09:15:22.000Z")
DAY = 86_400_000
AUTH = ("INTEGRATION_USER", "sim-password")
NEWHIRE = "/hcmRestApi/atomservlet/employee/newhire"

# Oracle's template spellings, spaces and typo included (hcm-atom-feeds.md §8).
ODD_KEYS = {
    "empassignment": {"Assignment Id"},
    "jobs": {"Job Id", "Effective Start Date"},
    "grades": {"Grade Id", "Effective Start Date"},
    "locations": {"Location Id", "Location Name"},
    "organizations": {"Organization Id"},
    "positions": {"Effective Start Date"},
    "availabilityPatternChange": {"AssignmenId"},
}


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def sim(clock: Clock) -> Iterator[HcmSimulator]:
    with HcmSimulator(clock=clock, seed=7) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = AUTH
        yield session


def get(
    http: requests.Session, sim: HcmSimulator, path: str = NEWHIRE, **params: Any
) -> requests.Response:
    return http.get(sim.url + path, params=params, timeout=5)


def ids(http: requests.Session, sim: HcmSimulator, path: str = NEWHIRE, **params: Any) -> list[str]:
    resp = get(http, sim, path, **params)
    assert resp.status_code == 200, resp.text
    parsed = feedparser.parse(resp.content)
    assert not parsed.bozo, parsed.bozo_exception
    return [e.id for e in parsed.entries]


def at(ms: int) -> str:
    return format_ms(ms)


# -- authentication ---------------------------------------------------------------------


def test_auth_missing_wrong_forbidden(sim: HcmSimulator) -> None:
    url = sim.url + NEWHIRE
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert requests.get(url, auth=("INTEGRATION_USER", "nope"), timeout=5).status_code == 401
    sim.forbidden_users.add("NO_ROLE")
    assert requests.get(url, auth=("NO_ROLE", "sim-password"), timeout=5).status_code == 403
    assert requests.get(url, auth=AUTH, timeout=5).status_code == 200
    assert [r.status for r in sim.requests] == [401, 401, 403, 200]
    assert sim.requests[2].user == "NO_ROLE"


# -- query semantics --------------------------------------------------------------------


def test_updated_min_exclusive_max_inclusive(sim: HcmSimulator, http: requests.Session) -> None:
    a, b, c = (sim.add_entry("newhire", updated_ms=T0 - n * 1000) for n in (2, 1, 0))
    got = ids(http, sim, **{"updated-min": at(a.updated_ms), "updated-max": at(b.updated_ms)})
    assert got == [b.id]
    assert set(ids(http, sim, **{"updated-min": at(a.updated_ms - 1)})) == {a.id, b.id, c.id}
    # Without milliseconds, and with an explicit offset (which must travel as %2B).
    assert ids(http, sim, **{"updated-min": "2024-03-04T09:15:21Z"}) == [c.id]
    assert ids(http, sim, **{"updated-max": "2024-03-04T09:15:20+00:00"}) == [a.id]


def test_published_min_exclusive_max_inclusive(sim: HcmSimulator, http: requests.Session) -> None:
    a = sim.add_entry("newhire", updated_ms=T0, published_ms=T0 - 3000)
    b = sim.add_entry("newhire", updated_ms=T0 - 5000, published_ms=T0 - 2000)
    sim.add_entry("newhire", updated_ms=T0 - 6000, published_ms=T0 - 1000)
    params = {"published-min": at(a.published_ms), "published-max": at(b.published_ms)}
    assert ids(http, sim, **params) == [b.id]


def test_bad_timestamp_is_400(sim: HcmSimulator, http: requests.Session) -> None:
    assert get(http, sim, **{"updated-min": "yesterday"}).status_code == 400
    assert get(http, sim, **{"page": "zero"}).status_code == 400
    assert get(http, sim, orderBy="title:asc").status_code == 400


def test_default_newest_first_and_order_by(sim: HcmSimulator, http: requests.Session) -> None:
    old = sim.add_entry("newhire", updated_ms=T0 - 3000, published_ms=T0 - 1000)
    mid = sim.add_entry("newhire", updated_ms=T0 - 2000, published_ms=T0 - 3000)
    new = sim.add_entry("newhire", updated_ms=T0 - 1000, published_ms=T0 - 2000)
    assert ids(http, sim) == [new.id, mid.id, old.id]
    assert ids(http, sim, orderBy="updated:asc") == [old.id, mid.id, new.id]
    assert ids(http, sim, orderBy="published:asc") == [mid.id, new.id, old.id]


def test_paging_default_ten(sim: HcmSimulator, http: requests.Session) -> None:
    hires = sim.add_hires(23, updated_ms=T0 - 100, spacing_ms=1)
    asc = [h.id for h in hires]
    pages = [ids(http, sim, orderBy="updated:asc", page=n) for n in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [10, 10, 3, 0]
    assert pages[0] + pages[1] + pages[2] == asc
    # No page parameter means page 1; max-results is not an HCM parameter and is ignored.
    assert ids(http, sim, orderBy="updated:asc", **{"max-results": 50}) == asc[:10]
    sized = ids(http, sim, orderBy="updated:asc", page=2, **{"page-size": 7})
    assert sized == asc[7:14]
    assert ids(http, sim, page=99) == []


def test_feed_links(sim: HcmSimulator, http: requests.Session) -> None:
    sim.add_hires(3, updated_ms=T0 - 10, spacing_ms=1)
    feed = feedparser.parse(get(http, sim, **{"page-size": 2}).content).feed
    rels = {link.rel: link.href for link in feed.links}
    assert "page=2" in rels["next"]
    assert "page-size=2" in rels["next"]
    last = feedparser.parse(get(http, sim, page=2, **{"page-size": 2}).content).feed
    assert "next" not in {link.rel for link in last.links}


def test_ties_stable_but_not_in_id_order(sim: HcmSimulator, http: requests.Session) -> None:
    hires = sim.add_hires(12, updated_ms=T0 - 1000)
    first = ids(http, sim, orderBy="updated:asc", **{"page-size": 20})
    assert first == ids(http, sim, orderBy="updated:asc", **{"page-size": 20})
    assert sorted(first) == sorted(h.id for h in hires)
    assert first not in (sorted(first), sorted(first, reverse=True))
    paged = [ids(http, sim, orderBy="updated:asc", page=n, **{"page-size": 5}) for n in (1, 2, 3)]
    assert [i for page in paged for i in page] == first


def test_future_dated_entry(sim: HcmSimulator, http: requests.Session, clock: Clock) -> None:
    now = sim.add_entry("newhire", updated_ms=T0 - 1000)
    future = sim.add_entry("newhire", updated_ms=T0 + 30 * DAY, published_ms=T0 - 500)
    assert ids(http, sim) == [now.id]
    assert ids(http, sim, **{"updated-max": at(T0)}) == [now.id]
    assert ids(http, sim, **{"updated-max": at(future.updated_ms - 1)}) == [now.id]
    assert ids(http, sim, **{"updated-max": at(future.updated_ms)}) == [future.id, now.id]
    assert ids(http, sim, **{"published-min": at(T0 - 600)}) == [future.id]
    clock.ms = future.updated_ms
    assert ids(http, sim) == [future.id, now.id]


# -- routes -----------------------------------------------------------------------------


def test_routes(sim: HcmSimulator, http: requests.Session) -> None:
    hire = sim.add_entry("newhire", updated_ms=T0 - 1)
    job = sim.add_entry("positions", updated_ms=T0 - 1)
    assert ids(http, sim, "/hcmCoreApi/atomservlet/employee/newhire") == [hire.id]
    assert ids(http, sim, f"{NEWHIRE}/{hire.key}") == [hire.id]
    assert ids(http, sim, "/hcmRestApi/atomservlet/workstructures/position") == [job.id]
    assert ids(http, sim, "/hcmRestApi/atomservlet/workstructures/positions") == [job.id]
    for path in (
        f"{NEWHIRE}/EMP1",
        "/hcmRestApi/atomservlet/workstructures/newhire",
        "/hcmRestApi/atomservlet/employee/cancelworkrelationship",
        "/hcmRestApi/atomservlet/employee",
        "/hcmRestApi/resources/11.13.18.05/workers",
        "/",
    ):
        assert get(http, sim, path).status_code == 404, path
    assert http.post(sim.url + NEWHIRE, data="x", timeout=5).status_code == 405


def test_archive_and_purge(sim: HcmSimulator, http: requests.Session) -> None:
    old = sim.factory.make("newhire", updated_ms=T0 - 400 * DAY)
    sim.add_archived(old)
    live = sim.add_entry("newhire", updated_ms=T0 - DAY)
    stale = sim.add_entry("newhire", updated_ms=T0 - 200 * DAY)
    assert ids(http, sim) == [live.id, stale.id]
    assert ids(http, sim, archive="yes") == [old.id]
    assert ids(http, sim, f"{NEWHIRE}/{old.key}", archive="yes") == [old.id]
    assert sim.purge(T0 - 100 * DAY) == 1
    assert ids(http, sim) == [live.id]


# -- entry content ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(catalog.COLLECTIONS))
def test_every_collection_parses(sim: HcmSimulator, http: requests.Session, name: str) -> None:
    coll = catalog.COLLECTIONS[name]
    made = [
        sim.add_entry(name, updated_ms=T0 - n, dml=d) for n, d in ((3, "INSERT"), (2, "UPDATE"))
    ]
    path = f"/hcmRestApi/atomservlet/{coll.workspace}/{name}"
    parsed = feedparser.parse(get(http, sim, path).content)
    assert not parsed.bozo
    assert parsed.feed.title == coll.feed_title
    assert parsed.feed.id.startswith("urn:uuid:")
    assert [e.id for e in parsed.entries] == [made[1].id, made[0].id]
    for entry, sim_entry in zip(parsed.entries, reversed(made)):
        assert entry.content[0].value == sim_entry.content
        assert entry.published == format_ms(sim_entry.published_ms)
        edit = next(link.href for link in entry.links if link.rel == "edit")
        assert edit == f"{sim.url}{path}/{sim_entry.key}"
        doc = json.loads(entry.content[0].value)
        context = doc["Context"][0]
        assert all(isinstance(v, str) for v in context.values())
        assert ODD_KEYS.get(name, set()) <= set(context)
        dml = "UPDATE" if sim_entry is made[1] else "INSERT"
        assert context.get("DMLOperation", context.get("Operation", dml)) == dml
        if coll.workspace == "employee":
            assert sim_entry.key == "EMP" + context["PersonId"]
            assert any(link.rel == "related" for link in entry.links)
        changes = [v for c in doc.get("Changed Attributes", []) for v in c.values()]
        if sim_entry is made[1] and name != "cancelworkrelship":
            assert all(isinstance(v, dict) and set(v) == {"old", "new"} for v in changes)
        else:
            assert all(isinstance(v, str) for v in changes)


def test_changed_attribute_shapes_and_flexfields() -> None:
    factory = EntryFactory(seed=3)
    updates = [factory.make("empupdate", updated_ms=T0, dml="UPDATE") for _ in range(20)]
    inserts = [factory.make("empupdate", updated_ms=T0) for _ in range(5)]
    for e in updates:
        for change in json.loads(e.content)["Changed Attributes"]:
            assert set(next(iter(change.values()))) == {"old", "new"}
    for e in inserts:
        for change in json.loads(e.content)["Changed Attributes"]:
            assert isinstance(next(iter(change.values())), str)
    flex = [json.loads(e.content).get("FlexFields") for e in updates]
    assert any(flex)
    assert next(f for f in flex if f)[0]["FlexFieldCode"] == "PER_PERSONS_DFF"
    assert "Changed Attributes" not in json.loads(factory.make("newhire", updated_ms=T0).content)
    cancelled = json.loads(factory.make("cancelworkrelship", updated_ms=T0, dml="UPDATE").content)
    assert all(isinstance(v, str) for c in cancelled["Changed Attributes"] for v in c.values())


def test_same_person_and_determinism() -> None:
    a, b = EntryFactory(seed=1), EntryFactory(seed=1)
    assert a.make("jobs", updated_ms=T0).content == b.make("jobs", updated_ms=T0).content
    person = a.person()
    hire = a.make("newhire", updated_ms=T0, person=person)
    update = a.make("empupdate", updated_ms=T0, person=person, dml="UPDATE")
    assert hire.key == update.key == f"EMP{person.person_id}"
    context = json.loads(update.content)["Context"][0]
    assert context["PersonName"] == f"{person.last}, {person.first}"
    assert len(context["PersonNumber"]) == 5
    assert len(context["PersonId"]) == 15
    assert a.make("newhire", updated_ms=T0, key="EMP300100999000001").key == "EMP300100999000001"


def test_special_characters_round_trip(sim: HcmSimulator, http: requests.Session) -> None:
    content = '{ "Context" : [ { "Name" : "R&D <Team> \\"Q\\" \'s Zoë Ødegård\\r\\n" } ] }\r\nx'
    entry = sim.add_entry("jobs", updated_ms=T0 - 1, content=content)
    entry.title = 'O\'Brien & <Müller> "Hired"'
    entry.author = "R&D"
    got = feedparser.parse(get(http, sim, "/hcmRestApi/atomservlet/workstructures/jobs").content)
    assert not got.bozo
    assert got.entries[0].content[0].value == content
    assert got.entries[0].title == entry.title
    assert got.entries[0].author == "R&D"


# -- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["401", "403", "404", "500", "503"])
def test_status_faults_then_recovery(sim: HcmSimulator, http: requests.Session, kind: str) -> None:
    sim.inject(kind, times=2)
    assert [get(http, sim).status_code for _ in range(3)] == [int(kind), int(kind), 200]
    assert [r.fault for r in sim.requests] == [kind, kind, None]


def test_faults_fifo_and_per_collection(sim: HcmSimulator, http: requests.Session) -> None:
    sim.inject("503", collection="jobs")
    sim.inject("500")
    sim.inject("429", retry_after=7)
    jobs = "/hcmRestApi/atomservlet/workstructures/jobs"
    first = get(http, sim)
    assert first.status_code == 500
    limited = get(http, sim)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
    assert get(http, sim).status_code == 200
    assert get(http, sim, jobs).status_code == 503
    assert get(http, sim, jobs).status_code == 200
    with pytest.raises(ValueError, match="unknown fault"):
        sim.inject("teapot")
    with pytest.raises(ValueError, match="no parameter"):
        sim.inject("slow", seconds=1)


def test_reset_fault(sim: HcmSimulator, http: requests.Session) -> None:
    sim.inject("reset")
    with pytest.raises(requests.ConnectionError):
        get(http, sim)
    assert get(http, sim).status_code == 200
    assert sim.requests[0].status == 0


def test_slow_fault_exceeds_read_timeout(sim: HcmSimulator, http: requests.Session) -> None:
    sim.inject("slow", delay=1.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(sim.url + NEWHIRE, timeout=(2, 0.5))


def test_stop_cuts_slow_fault_short(clock: Clock) -> None:
    sim = HcmSimulator(clock=clock).start()
    sim.inject("slow", delay=30)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            requests.get(sim.url + NEWHIRE, auth=AUTH, timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.2)
    began = time.monotonic()
    sim.stop()
    worker.join(timeout=5)
    assert time.monotonic() - began < 1.0
    assert not worker.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)


def test_login_page_and_redirect(sim: HcmSimulator, http: requests.Session) -> None:
    sim.inject("login_page")
    sim.inject("redirect_login")
    page = get(http, sim)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<form" in page.text
    moved = http.get(sim.url + NEWHIRE, allow_redirects=False, timeout=5)
    assert moved.status_code == 302
    assert moved.headers["Location"].startswith("https://login.example.com/oauth2/authorize?")


def test_truncated_fault(sim: HcmSimulator, http: requests.Session) -> None:
    sim.add_hires(5, updated_ms=T0 - 10)
    whole = get(http, sim).content
    sim.inject("truncated")
    cut = get(http, sim)
    assert cut.status_code == 200
    assert cut.headers["Content-Type"] == "application/atom+xml;charset=UTF-8"
    assert int(cut.headers["Content-Length"]) == len(cut.content)
    assert abs(len(cut.content) - len(whole) // 2) < 100
    assert feedparser.parse(cut.content).bozo


def test_bad_json_fault(sim: HcmSimulator, http: requests.Session) -> None:
    sim.add_hires(3, updated_ms=T0 - 10)
    sim.inject("bad_json")
    parsed = feedparser.parse(get(http, sim).content)
    assert not parsed.bozo
    assert len(parsed.entries) == 3
    for entry in parsed.entries:
        with pytest.raises(json.JSONDecodeError):
            json.loads(entry.content[0].value)


def test_wrong_content_type_fault(sim: HcmSimulator, http: requests.Session) -> None:
    sim.inject("wrong_content_type")
    resp = get(http, sim)
    assert (resp.status_code, resp.headers["Content-Type"]) == (200, "application/json")
    assert resp.json() == {"items": []}


def test_huge_fault_streams(sim: HcmSimulator, http: requests.Session) -> None:
    sim.inject("huge", size_mb=2)
    with http.get(sim.url + NEWHIRE, stream=True, timeout=5) as resp:
        assert resp.status_code == 200
        body = b"".join(resp.iter_content(1 << 16))
    assert len(body) == int(resp.headers["Content-Length"])
    parsed = feedparser.parse(body)
    assert not parsed.bozo
    assert len(parsed.entries[0].content[0].value) == 2 * 1024 * 1024
    assert json.loads(parsed.entries[0].content[0].value)["Context"][0]["Blob"].startswith("AAA")


def test_billion_laughs_fault(sim: HcmSimulator, http: requests.Session) -> None:
    sim.inject("billion_laughs")
    resp = get(http, sim)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/atom+xml")
    assert '<!ENTITY lol9 "&lol8;&lol8;' in resp.text
    assert "&lol9;" in resp.text
    assert len(resp.content) < 2000


# -- hooks, admin API, lifecycle --------------------------------------------------------


def test_on_request_hook_inserts_between_pages(sim: HcmSimulator, http: requests.Session) -> None:
    hires = sim.add_hires(10, updated_ms=T0 - 1000, spacing_ms=10)
    late: list[SimEntry] = []

    def hook(record: RequestRecord) -> None:
        assert record.status == 0
        if record.query.get("page") == "2" and not late:
            # A late commit: older than everything already read, so page 2 shifts by one.
            late.append(sim.add_entry("newhire", updated_ms=T0 - 5000))

    sim.on_request = hook
    page1 = ids(http, sim, orderBy="updated:asc", page=1)
    page2 = ids(http, sim, orderBy="updated:asc", page=2)
    assert page1 == [h.id for h in hires]
    assert page2 == [hires[-1].id]
    assert [r.query.get("page") for r in sim.requests] == ["1", "2"]


def test_admin_api(sim: HcmSimulator, http: requests.Session) -> None:
    made = requests.post(
        sim.url + "/_sim/entries",
        json={"feed": "jobs", "count": 2, "updated": "2024-03-04T09:00:00Z"},
        timeout=5,
    )
    assert made.status_code == 201
    new_ids = made.json()["ids"]
    assert len(new_ids) == 2
    assert all(i.startswith("atomservlet:jobs:") for i in new_ids)
    listed = requests.get(sim.url + "/_sim/entries", params={"feed": "jobs"}, timeout=5).json()
    assert [e["id"] for e in listed] == new_ids
    assert listed[0]["updated"] == "2024-03-04T09:00:00.000Z"
    assert {"id", "updated", "published", "title"} <= set(listed[0])

    fault = {"fault": "500", "times": 1, "feed": "newhire"}
    assert requests.post(sim.url + "/_sim/faults", json=fault, timeout=5).status_code == 201
    assert get(http, sim).status_code == 500
    slow = {"fault": "slow", "delay": 0.1}
    assert requests.post(sim.url + "/_sim/faults", json=slow, timeout=5).status_code == 201
    cleared = requests.delete(sim.url + "/_sim/faults", timeout=5).json()
    assert cleared == {"cleared": 1}
    bad = requests.post(sim.url + "/_sim/faults", json={"fault": "boom"}, timeout=5)
    assert bad.status_code == 400

    records = requests.get(sim.url + "/_sim/requests", timeout=5).json()
    assert [(r["path"], r["status"], r["fault"]) for r in records] == [(NEWHIRE, 500, "500")]
    assert requests.get(sim.url + "/_sim/nothing", timeout=5).status_code == 404


def test_restart_keeps_port_and_entries(clock: Clock) -> None:
    sim = HcmSimulator(clock=clock).start()
    try:
        url = sim.url
        hire = sim.add_entry("newhire", updated_ms=T0 - 1)
        sim.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(url + NEWHIRE, auth=AUTH, timeout=2)
        sim.start()
        assert sim.url == url
        resp = requests.get(url + NEWHIRE, auth=AUTH, timeout=5)
        assert [e.id for e in feedparser.parse(resp.content).entries] == [hire.id]
    finally:
        sim.stop()


def test_keep_alive_session_survives_errors(sim: HcmSimulator, http: requests.Session) -> None:
    sim.inject("500")
    sim.inject("truncated")
    statuses = [get(http, sim).status_code for _ in range(4)]
    assert statuses == [500, 200, 200, 200]
