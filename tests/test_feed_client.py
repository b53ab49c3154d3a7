"""The HCM client (`atomsync.feed`) against the HCM simulator, over real HTTP on loopback."""

from __future__ import annotations

import base64
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import requests

from atomsync.atom import Entry, FeedError
from atomsync.config import FeedConfig, HcmConfig
from atomsync.feed import FetchError, HcmClient, Window, build_query
from atomsync.sim.hcm import HcmSimulator
from atomsync.timeutil import parse_timestamp

T0 = parse_timestamp("2024-03-04T09:15:22.000Z")
USER = "INTEGRATION_USER"
# Distinctive, so that a leak into any message is unmistakable.
PASSWORD = "Pw-7f3Qz!leak-canary-9K"
NEWHIRE_PATH = "/hcmRestApi/atomservlet/employee/newhire"
NEWHIRE = FeedConfig(name="newhire", collection="newhire", workspace="employee", path=NEWHIRE_PATH)
NEWHIRE_PUBLISHED = FeedConfig(
    name="newhire-published",
    collection="newhire",
    workspace="employee",
    path=NEWHIRE_PATH,
    cursor="published",
)
WINDOW = Window("updated", T0 - 60_000, T0)
READ_TIMEOUT = 0.5


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
def sim() -> Iterator[HcmSimulator]:
    with HcmSimulator(username=USER, password=PASSWORD, clock=Clock(T0), seed=11) as server:
        yield server


def hcm_config(base_url: str, **overrides: Any) -> HcmConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "username": USER,
        "password": PASSWORD,
        "page_size": 10,
        "timeout_seconds": READ_TIMEOUT,
        "connect_timeout_seconds": 2.0,
        "max_response_bytes": 1 << 20,
    }
    values.update(overrides)
    return HcmConfig(**values)


@pytest.fixture
def client(sim: HcmSimulator) -> Iterator[HcmClient]:
    hcm = HcmClient(hcm_config(sim.url))
    yield hcm
    hcm.close()


def fetch_error(call: Callable[[], object]) -> FetchError:
    with pytest.raises(FetchError) as info:
        call()
    return info.value


def assert_clean(exc: BaseException) -> None:
    """One line, no traceback or library reprs, and never the password in any form."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    texts = [str(exc), repr(exc), *(str(a) for a in exc.args)]
    for text in texts:
        assert PASSWORD not in text
        assert token not in text
    message = str(exc)
    assert message.strip() == message and message
    assert "\n" not in message
    assert "Traceback" not in message
    assert "HTTPConnectionPool" not in message and "HTTPConnection(" not in message
    # Raised `from None`: a logged traceback does not drag the library chain along.
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


def ids(entries: list[Entry]) -> list[str]:
    return [e.id for e in entries]


# -- query building ---------------------------------------------------------------------


def test_build_query_order_values_and_format() -> None:
    window = Window("updated", T0 + 7, T0 + 86_400_000 + 123)
    assert build_query(window, 3, 25) == [
        ("orderBy", "updated:asc"),
        ("page", "3"),
        ("page-size", "25"),
        ("updated-min", "2024-03-04T09:15:22.007Z"),
        ("updated-max", "2024-03-05T09:15:22.123Z"),
    ]
    # No lower bound yet (a feed read from the beginning): only the upper one is sent.
    assert build_query(Window("updated", None, T0), 1, 10) == [
        ("orderBy", "updated:asc"),
        ("page", "1"),
        ("page-size", "10"),
        ("updated-max", "2024-03-04T09:15:22.000Z"),
    ]
    published = build_query(Window("published", 0, T0), 1, 10)
    assert published == [
        ("orderBy", "published:asc"),
        ("page", "1"),
        ("page-size", "10"),
        ("published-min", "1970-01-01T00:00:00.000Z"),
        ("published-max", "2024-03-04T09:15:22.000Z"),
    ]


def test_simulator_receives_the_query(sim: HcmSimulator, client: HcmClient) -> None:
    client.fetch_page(NEWHIRE, Window("updated", T0 - 1001, T0 + 5), 2)
    client.fetch_page(NEWHIRE, Window("updated", None, T0), 1, page_size=7)
    client.fetch_page(NEWHIRE_PUBLISHED, Window("published", T0 - 1, T0), 4, page_size=3)
    got = [(r.path, list(r.query.items())) for r in sim.requests]
    assert got == [
        (
            NEWHIRE_PATH,
            [
                ("orderBy", "updated:asc"),
                ("page", "2"),
                ("page-size", "10"),  # hcm.page_size
                ("updated-min", "2024-03-04T09:15:20.999Z"),
                ("updated-max", "2024-03-04T09:15:22.005Z"),
            ],
        ),
        (
            NEWHIRE_PATH,
            [
                ("orderBy", "updated:asc"),
                ("page", "1"),
                ("page-size", "7"),
                ("updated-max", "2024-03-04T09:15:22.000Z"),
            ],
        ),
        (
            NEWHIRE_PATH,
            [
                ("orderBy", "published:asc"),
                ("page", "4"),
                ("page-size", "3"),
                ("published-min", "2024-03-04T09:15:21.999Z"),
                ("published-max", "2024-03-04T09:15:22.000Z"),
            ],
        ),
    ]
    assert all("max-results" not in r.query for r in sim.requests)


def test_window_bounds_reach_hcm_to_the_millisecond(sim: HcmSimulator, client: HcmClient) -> None:
    before, inside, edge, after = (
        sim.add_entry("newhire", updated_ms=T0 - 2001 + n) for n in (0, 1, 2, 3)
    )
    # min exclusive, max inclusive: only a millisecond-exact query selects these two.
    window = Window("updated", before.updated_ms, edge.updated_ms)
    got = client.fetch_page(NEWHIRE, window, 1)
    assert ids(got) == [inside.id, edge.id]
    assert [e.updated_ms for e in got] == [inside.updated_ms, edge.updated_ms]
    assert after.id not in ids(got)


def test_published_cursor(sim: HcmSimulator, client: HcmClient) -> None:
    early = sim.add_entry("newhire", updated_ms=T0 - 10, published_ms=T0 - 3000)
    late = sim.add_entry("newhire", updated_ms=T0 - 5000, published_ms=T0 - 1000)
    sim.add_entry("newhire", updated_ms=T0 - 20, published_ms=T0 - 100)
    window = Window("published", T0 - 4000, T0 - 1000)
    got = client.fetch_page(NEWHIRE_PUBLISHED, window, 1)
    assert ids(got) == [early.id, late.id]
    assert [e.published_ms for e in got] == [T0 - 3000, T0 - 1000]


# -- a normal page ----------------------------------------------------------------------


def test_pages_parse_with_auth_and_accept_on_one_connection(sim: HcmSimulator) -> None:
    hires = sim.add_hires(10, updated_ms=T0 - 1000, spacing_ms=10)
    sent: list[requests.PreparedRequest] = []
    local_ports: list[int] = []

    def seen(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        sent.append(resp.request)
        # The answer is streamed, so its socket is still attached: note the client's port.
        local_ports.append(resp.raw.connection.sock.getsockname()[1])

    session = requests.Session()
    session.hooks["response"].append(seen)
    client = HcmClient(hcm_config(sim.url), session=session)
    try:
        pages = [client.fetch_page(NEWHIRE, WINDOW, n, page_size=4) for n in (1, 2, 3, 4)]
        assert [len(p) for p in pages] == [4, 4, 2, 0]
        assert [i for p in pages for i in ids(p)] == [h.id for h in hires]
        first = pages[0][0]
        assert first.updated_ms == hires[0].updated_ms
        assert first.published_ms is not None
        assert first.content_error is None
        assert first.context and first.context[0]["PersonNumber"]
        assert first.links["edit"].endswith("/newhire/" + hires[0].key)

        # The simulator checks the password: a 200 and the user name prove Basic auth.
        assert [(r.status, r.user) for r in sim.requests] == [(200, USER)] * 4
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert len(sent) == 4
        for request in sent:
            assert request.headers["Accept"] == "application/atom+xml"
            assert request.headers["Authorization"] == f"Basic {token}"
            assert request.headers["User-Agent"].startswith("atomsync/")

        # Keep-alive: four pages, one TCP connection (the same client port every time).
        assert len(local_ports) == 4
        assert len(set(local_ports)) == 1
    finally:
        client.close()


def test_url_and_legacy_path(sim: HcmSimulator, client: HcmClient) -> None:
    hire = sim.add_entry("newhire", updated_ms=T0 - 5)
    legacy_path = "/hcmCoreApi/atomservlet/employee/newhire"
    legacy = FeedConfig(
        name="newhire", collection="newhire", workspace="employee", path=legacy_path
    )
    assert client.url(NEWHIRE) == sim.url + NEWHIRE_PATH
    assert client.url(legacy) == sim.url + legacy_path
    assert ids(client.fetch_page(legacy, WINDOW, 1)) == [hire.id]
    assert sim.requests[-1].path == legacy_path


def test_wrong_workspace_is_not_found(sim: HcmSimulator, client: HcmClient) -> None:
    path = "/hcmRestApi/atomservlet/workstructures/newhire"
    wrong = FeedConfig(name="newhire", collection="newhire", workspace="workstructures", path=path)
    exc = fetch_error(lambda: client.fetch_page(wrong, WINDOW, 1))
    assert exc.kind == "not_found"
    assert path in str(exc) and "404" in str(exc)
    assert "workspace" in str(exc)
    assert_clean(exc)


# -- faults -----------------------------------------------------------------------------

# fault, its parameters, the kind, words the message must carry (case-insensitive).
FAULT_CASES: list[tuple[str, dict[str, float], str, tuple[str, ...]]] = [
    ("401", {}, "auth", ("401", "credentials", "hcm.username")),
    ("403", {}, "forbidden", ("403", "Integration Specialist job role")),
    ("404", {}, "not_found", ("404", NEWHIRE_PATH)),
    ("429", {"retry_after": 3}, "throttled", ("429", "wait 3 s")),
    ("500", {}, "server", ("500", "HCM's side")),
    ("503", {}, "server", ("503", "HCM's side")),
    ("slow", {"delay": 1.5}, "timeout", (f"{READ_TIMEOUT:g} s", "hcm.timeout_seconds")),
    ("reset", {}, "network", ("connection", "reset")),
    ("login_page", {}, "login_page", ("login page", "credentials")),
    ("redirect_login", {}, "login_page", ("login page", "login.example.com", "302")),
    ("truncated", {}, "bad_response", ("not well-formed",)),
    ("wrong_content_type", {}, "bad_response", ("application/json", "not an Atom feed")),
    ("huge", {"size_mb": 2}, "bad_response", ("hcm.max_response_bytes", str(1 << 20))),
    ("billion_laughs", {}, "bad_response", ("not well-formed",)),
]


@pytest.mark.parametrize(
    ("fault", "params", "kind", "words"), FAULT_CASES, ids=[c[0] for c in FAULT_CASES]
)
def test_fault_is_a_clear_fetch_error_then_recovers(
    sim: HcmSimulator,
    client: HcmClient,
    fault: str,
    params: dict[str, float],
    kind: str,
    words: tuple[str, ...],
) -> None:
    hires = sim.add_hires(4, updated_ms=T0 - 1000, spacing_ms=1)
    sim.inject(fault, **params)
    exc = fetch_error(lambda: client.fetch_page(NEWHIRE, WINDOW, 1))
    assert isinstance(exc, FeedError)
    assert exc.kind == kind, str(exc)
    for word in words:
        assert word.lower() in str(exc).lower(), (word, str(exc))
    assert_clean(exc)
    if kind == "throttled":
        assert exc.retry_after == 3.0
    else:
        assert exc.retry_after is None
    # Exactly one request reached HCM (no hidden retries, no redirect followed), and the
    # same client reads the next page normally. (`slow` is logged only when it answers.)
    faulted = [r.fault for r in sim.requests]
    assert faulted == [fault] or (fault == "slow" and faulted == [])
    assert ids(client.fetch_page(NEWHIRE, WINDOW, 1)) == [h.id for h in hires]


def test_real_wrong_password_and_missing_role(sim: HcmSimulator) -> None:
    wrong = HcmClient(hcm_config(sim.url, password=PASSWORD + "-old"))
    try:
        exc = fetch_error(lambda: wrong.fetch_page(NEWHIRE, WINDOW, 1))
        assert exc.kind == "auth"
        assert "credentials" in str(exc)
        assert PASSWORD + "-old" not in repr(exc)
        assert_clean(exc)
    finally:
        wrong.close()
    sim.forbidden_users.add("NO_ROLE")
    no_role = HcmClient(hcm_config(sim.url, username="NO_ROLE"))
    try:
        exc = fetch_error(lambda: no_role.fetch_page(NEWHIRE, WINDOW, 1))
        assert exc.kind == "forbidden"
        assert "role" in str(exc)
        assert_clean(exc)
    finally:
        no_role.close()
    assert [(r.user, r.status) for r in sim.requests] == [(USER, 401), ("NO_ROLE", 403)]


def test_redirect_to_login_is_not_followed(sim: HcmSimulator, client: HcmClient) -> None:
    sent: list[str] = []
    client.session.hooks["response"].append(lambda resp, *a, **k: sent.append(resp.url))
    sim.inject("redirect_login")
    exc = fetch_error(lambda: client.fetch_page(NEWHIRE, WINDOW, 1))
    assert exc.kind == "login_page"
    assert len(sent) == 1 and sent[0].startswith(sim.url + NEWHIRE_PATH)
    assert [r.status for r in sim.requests] == [302]


def test_truncated_page_never_yields_part_of_a_list(sim: HcmSimulator, client: HcmClient) -> None:
    sim.add_hires(10, updated_ms=T0 - 1000, spacing_ms=1)
    # Cut in half, the page still holds about five whole entries: none may come back.
    sim.inject("truncated")
    exc = fetch_error(lambda: client.fetch_page(NEWHIRE, WINDOW, 1))
    assert exc.kind == "bad_response"
    assert "not well-formed" in str(exc)
    assert len(client.fetch_page(NEWHIRE, WINDOW, 1)) == 10


def test_bad_content_json_is_kept_not_an_error(sim: HcmSimulator, client: HcmClient) -> None:
    hires = sim.add_hires(3, updated_ms=T0 - 1000, spacing_ms=1)
    sim.inject("bad_json")
    got = client.fetch_page(NEWHIRE, WINDOW, 1)
    assert ids(got) == [h.id for h in hires]
    for entry, hire in zip(got, hires):
        assert entry.content_error is not None
        assert "not valid JSON" in entry.content_error
        assert entry.content_raw and entry.content_raw != hire.content
        assert entry.content_raw.replace('"', "") == hire.content.replace('"', "")
        assert entry.context == []
        assert entry.updated_ms == hire.updated_ms


def test_huge_answer_fails_fast_and_bounded(sim: HcmSimulator) -> None:
    client = HcmClient(hcm_config(sim.url, max_response_bytes=64 * 1024))
    try:
        sim.add_hires(1, updated_ms=T0 - 1000)
        sim.inject("huge", size_mb=8)
        tracemalloc.start()
        try:
            exc = fetch_error(lambda: client.fetch_page(NEWHIRE, WINDOW, 1))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert exc.kind == "bad_response"
        assert "hcm.max_response_bytes (65536 bytes)" in str(exc)
        assert peak < 4 * 1024 * 1024  # nowhere near the 8 MB answer
        assert_clean(exc)
        assert len(client.fetch_page(NEWHIRE, WINDOW, 1)) == 1
    finally:
        client.close()


def test_billion_laughs_fails_fast_and_bounded(sim: HcmSimulator, client: HcmClient) -> None:
    sim.inject("billion_laughs")
    tracemalloc.start()
    try:
        exc = fetch_error(lambda: client.fetch_page(NEWHIRE, WINDOW, 1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.kind == "bad_response"
    assert "lol" not in str(exc)
    assert peak < 16 * 1024 * 1024  # 10**9 "lol"s would be gigabytes


# -- no HCM at all ----------------------------------------------------------------------


def test_connection_refused_is_prompt_and_plain() -> None:
    # Bound but not listening: connections are refused, and no other process can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        client = HcmClient(hcm_config(f"http://127.0.0.1:{port}"))
        try:
            exc = fetch_error(lambda: client.fetch_page(NEWHIRE, WINDOW, 1))
        finally:
            client.close()
    assert exc.kind == "network"
    assert f"127.0.0.1:{port}" in str(exc)
    assert "Connection refused" in str(exc)
    assert "hcm.base_url" in str(exc)
    assert "Errno" not in str(exc)
    assert_clean(exc)
