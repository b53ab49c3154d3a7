"""The ONS simulator verifies OCI signatures for real: these tests prove that bad ones fail.

Requests are made with the real `oci` SDK (its clients, and its signer driving `requests` when a
request has to be tampered with after signing), over real HTTP on loopback.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from atomsync.sim.keys import ApiKey, generate_api_key, write_oci_config
from atomsync.sim.ons import (
    OnsSimulator,
    SignatureError,
    build_signing_string,
    content_sha256,
    parse_authorization,
    verify_request,
)

TOPIC = "ocid1.onstopic.oc1.iad.aaaaaaaatopicone"
OTHER_TOPIC = "ocid1.onstopic.oc1.iad.aaaaaaaatopictwo"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvY2lkMS5pbnN0YW5jZSJ9.c2lnbmF0dXJl"
PUBLISH_PATH = f"/20181201/topics/{TOPIC}/messages"
# Mon, 04 Mar 2024 09:15:23 GMT, the date of the reference test vector.
FIXED_DATE = "Mon, 04 Mar 2024 09:15:23 GMT"
FIXED_TS = email.utils.parsedate_to_datetime(FIXED_DATE).timestamp()


class FakeClock:
    """Frozen at construction (close to real time, so SDK-signed dates are within skew)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oci() -> ModuleType:
    # Imported here, not at module level: `import oci` costs 0.4 s and 50 MB for every run.
    import oci as sdk

    return sdk


@pytest.fixture(scope="session")
def api_key() -> ApiKey:
    return generate_api_key()


@pytest.fixture(scope="session")
def stranger_key() -> ApiKey:
    return generate_api_key(user="ocid1.user.oc1..aaaaaaaaanotregistered")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(api_key: ApiKey, clock: FakeClock) -> Iterator[OnsSimulator]:
    simulator = OnsSimulator(clock=clock)
    simulator.add_api_key(api_key)
    simulator.add_topic(TOPIC, name="hcm-events")
    simulator.add_topic(OTHER_TOPIC)
    with simulator:
        yield simulator


@pytest.fixture
def config(oci: ModuleType, api_key: ApiKey, tmp_path: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = oci.config.from_file(str(write_oci_config(tmp_path, api_key)))
    return cfg


def client_kwargs(oci: ModuleType, sim: OnsSimulator, read_timeout: float = 10) -> dict[str, Any]:
    return {
        "service_endpoint": sim.url,
        "retry_strategy": oci.retry.NoneRetryStrategy(),
        "circuit_breaker_strategy": oci.circuit_breaker.NoCircuitBreakerStrategy(),
        "timeout": (5, read_timeout),
    }


def data_client(oci: ModuleType, sim: OnsSimulator, config: dict[str, Any], **kw: Any) -> Any:
    return oci.ons.NotificationDataPlaneClient(config, **client_kwargs(oci, sim, **kw))


def publish(client: Any, oci: ModuleType, body: str, title: str | None = None, **kw: Any) -> Any:
    return client.publish_message(
        TOPIC, oci.ons.models.MessageDetails(title=title, body=body), **kw
    )


def api_signer(oci: ModuleType, key: ApiKey) -> Any:
    return oci.signer.Signer(
        key.tenancy,
        key.user,
        key.fingerprint,
        None,
        private_key_content=key.private_pem.decode("ascii"),
    )


def signed(
    signer: Any,
    url: str,
    body: bytes | None = b'{"body": "hello"}',
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> requests.PreparedRequest:
    """A request prepared and signed by the SDK's signer, ready to be tampered with and sent."""
    all_headers = {"content-type": "application/json", **(headers or {})}
    prepared = requests.Request(method, url, data=body, headers=all_headers).prepare()
    signer(prepared)
    return prepared


def send(prepared: requests.PreparedRequest) -> requests.Response:
    with requests.Session() as session:
        return session.send(prepared, timeout=5)


def assert_not_authenticated(response: requests.Response, sim: OnsSimulator, fragment: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["opc-request-id"]
    error = response.json()
    assert error["code"] == "NotAuthenticated"
    assert fragment in error["message"]
    assert sim.accepted == []
    assert [(r.status, r.code) for r in sim.rejected] == [(401, "NotAuthenticated")]


# --- pure parts ----------------------------------------------------------------------------------


def test_signing_string_matches_the_reference_vector() -> None:
    body = json.dumps(
        {
            "title": "New hire: Jane Roe (10457)",
            "body": json.dumps({"id": "atomservlet:newhire:EMP300100555000111"}),
        }
    ).encode("ascii")
    assert len(body) == 103
    assert content_sha256(body) == "8sgbvXuvl/Zb1qVsavr7SH+1HHAiPChtArJPP/OdybQ="
    headers = {
        "Date": FIXED_DATE,
        "Host": "notification.us-ashburn-1.oraclecloud.com",
        "Content-Length": "103",
        "Content-Type": "application/json",
        "X-Content-SHA256": content_sha256(body),
    }
    signed_headers = "date (request-target) host content-length content-type x-content-sha256"
    text = build_signing_string(
        "POST",
        "/20181201/topics/ocid1.onstopic.oc1.iad.aaaaexampletopic/messages",
        signed_headers.split(),
        headers,
    )
    assert text == (
        "date: Mon, 04 Mar 2024 09:15:23 GMT\n"
        "(request-target): post /20181201/topics/ocid1.onstopic.oc1.iad.aaaaexampletopic/messages\n"
        "host: notification.us-ashburn-1.oraclecloud.com\n"
        "content-length: 103\n"
        "content-type: application/json\n"
        "x-content-sha256: 8sgbvXuvl/Zb1qVsavr7SH+1HHAiPChtArJPP/OdybQ="
    )


def test_empty_body_digest() -> None:
    assert content_sha256(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


_AUTH_PARAMS = {
    "version": '"1"',
    "keyId": '"ocid1.tenancy.oc1..aaaa/ocid1.user.oc1..bbbb/aa:bb"',
    "algorithm": '"rsa-sha256"',
    "headers": '"date (request-target) host"',
    "signature": '"' + base64.b64encode(b"sig,with=odd").decode() + '"',
}


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(list(_AUTH_PARAMS)))
def test_authorization_parameters_in_any_order(order: list[str]) -> None:
    params = parse_authorization("Signature " + ",".join(f"{k}={_AUTH_PARAMS[k]}" for k in order))
    assert params.key_id == "ocid1.tenancy.oc1..aaaa/ocid1.user.oc1..bbbb/aa:bb"
    assert params.headers == ("date", "(request-target)", "host")
    assert params.signature == b"sig,with=odd"
    assert params.version == "1"


_SIGNED_DATE = 'Signature keyId="k",signature="AA==",headers="date"'


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ('Basic dXNlcjpwYXNz"', "'Signature' scheme"),
        ('Signature keyId="k",algorithm="rsa-sha256",headers="date"', "signature"),
        ('Signature keyId="k",signature="AA==",headers="date"', "algorithm"),
        ('Signature keyId="k",signature="AA==",headers="date",algorithm="hmac-sha256"', "hmac"),
        (_SIGNED_DATE + ',algorithm="rsa-sha256",version="2"', "version"),
        ('Signature keyId="k",signature="?!",headers="date",algorithm="rsa-sha256"', "base64"),
    ],
)  # fmt: skip
def test_malformed_authorization(header: str, fragment: str) -> None:
    with pytest.raises(SignatureError, match=fragment):
        parse_authorization(header)


def test_verify_request_requires_body_headers_on_post() -> None:
    header = (
        'Signature version="1",keyId="k",algorithm="rsa-sha256",'
        'headers="date (request-target) host content-length",signature="AA=="'
    )
    with pytest.raises(SignatureError, match="content-type, x-content-sha256") as caught:
        verify_request("POST", "/x", {"Authorization": header}, b"", keys={}, now=0)
    assert caught.value.key_id == "k"


# --- keys and config -----------------------------------------------------------------------------


def test_written_config_is_accepted_by_the_sdk(
    oci: ModuleType, api_key: ApiKey, tmp_path: Path
) -> None:
    path = write_oci_config(tmp_path / "oci", api_key, profile="ATOMSYNC", region="eu-frankfurt-1")
    cfg = oci.config.from_file(str(path), profile_name="ATOMSYNC")
    oci.config.validate_config(cfg)
    signer = oci.signer.Signer.from_config(cfg)
    assert signer.api_key == api_key.key_id
    assert cfg["region"] == "eu-frankfurt-1"
    assert Path(cfg["key_file"]).is_absolute()
    for written in (path, Path(cfg["key_file"])):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_fingerprint_is_md5_of_the_der_public_key(api_key: ApiKey) -> None:
    lines = api_key.public_pem.decode("ascii").strip().splitlines()
    der = base64.b64decode("".join(lines[1:-1]))
    digest = hashlib.md5(der, usedforsecurity=False).hexdigest()
    assert api_key.fingerprint == ":".join(digest[i : i + 2] for i in range(0, 32, 2))
    assert api_key.key_id.endswith("/" + api_key.fingerprint)


# --- signed requests that are accepted -----------------------------------------------------------


def test_publish_with_an_api_key_from_a_config_file(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any], api_key: ApiKey
) -> None:
    client = data_client(oci, sim, config)
    response = publish(client, oci, '{"id": "é"}', title="New hire", opc_request_id="REQ1")
    assert response.status == 200
    assert response.request_id == "REQ1"
    assert response.data.time_stamp.tzinfo is not None
    (accepted,) = sim.wait_for(1)
    assert accepted.topic_id == TOPIC
    assert accepted.title == "New hire"
    assert accepted.body == '{"id": "é"}'
    assert accepted.key_id == api_key.key_id
    assert accepted.message_id == response.data.message_id
    assert accepted.request_id == "REQ1"
    assert accepted.headers["x-content-sha256"] == content_sha256(accepted.raw)
    # The same keep-alive connection carries the next request.
    assert publish(client, oci, "second").status == 200
    assert len(sim.accepted) == 2
    assert sim.rejected == []


@pytest.mark.parametrize("cfg", [{}, {"region": "us-ashburn-1"}])
def test_publish_with_a_security_token_signer(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey, cfg: dict[str, str]
) -> None:
    sim.add_key(f"ST${TOKEN}", api_key.public_pem)
    signer = oci.auth.signers.SecurityTokenSigner(TOKEN, api_key.load_private_key())
    client = oci.ons.NotificationDataPlaneClient(cfg, signer=signer, **client_kwargs(oci, sim))
    response = publish(client, oci, "from a principal")
    (accepted,) = sim.accepted
    assert accepted.key_id == f"ST${TOKEN}"
    assert accepted.message_id == response.data.message_id


def test_get_topic_through_the_control_plane_client(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]
) -> None:
    client = oci.ons.NotificationControlPlaneClient(config, **client_kwargs(oci, sim))
    topic = client.get_topic(TOPIC).data
    assert topic.topic_id == TOPIC
    assert topic.name == "hcm-events"
    assert topic.lifecycle_state == "ACTIVE"
    assert topic.api_endpoint == sim.url
    assert topic.time_created.tzinfo is not None
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        client.get_topic("ocid1.onstopic.oc1.iad.aaaaaaaamissing")
    assert (caught.value.status, caught.value.code) == (404, "NotAuthorizedOrNotFound")


def test_get_with_a_query_string_and_post_with_an_empty_body_verify(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey
) -> None:
    signer = api_signer(oci, api_key)
    response = send(signed(signer, f"{sim.url}/20181201/topics/{TOPIC}?x=1&y=a%20b", None, "GET"))
    assert response.status_code == 200, response.text
    assert response.json()["topicId"] == TOPIC
    response = send(signed(signer, sim.url + PUBLISH_PATH, None))
    # The signature held; the empty body is then refused as a message.
    assert response.status_code == 400
    assert response.json()["code"] == "CannotParseRequest"


# --- signed requests that must fail --------------------------------------------------------------


def test_body_changed_after_signing_same_length(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey
) -> None:
    prepared = signed(api_signer(oci, api_key), sim.url + PUBLISH_PATH, b'{"body": "hello"}')
    prepared.body = b'{"body": "HELLO"}'
    assert_not_authenticated(send(prepared), sim, "x-content-sha256")


def test_body_changed_after_signing_other_length(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey
) -> None:
    prepared = signed(api_signer(oci, api_key), sim.url + PUBLISH_PATH, b'{"body": "hello"}')
    prepared.body = b'{"body": "hello, world"}'
    prepared.headers["Content-Length"] = str(len(prepared.body))
    assert_not_authenticated(send(prepared), sim, "signature does not verify")


def test_body_and_digest_changed_after_signing(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey
) -> None:
    prepared = signed(api_signer(oci, api_key), sim.url + PUBLISH_PATH, b'{"body": "hello"}')
    prepared.body = b'{"body": "HELLO"}'
    prepared.headers["x-content-sha256"] = content_sha256(prepared.body)
    assert_not_authenticated(send(prepared), sim, "signature does not verify")


def test_unknown_key(oci: ModuleType, sim: OnsSimulator, stranger_key: ApiKey) -> None:
    prepared = signed(api_signer(oci, stranger_key), sim.url + PUBLISH_PATH)
    assert_not_authenticated(send(prepared), sim, "unknown keyId")
    assert sim.rejected[0].key_id == stranger_key.key_id


def test_unknown_key_through_the_sdk(
    oci: ModuleType, sim: OnsSimulator, stranger_key: ApiKey, tmp_path: Path
) -> None:
    cfg = oci.config.from_file(str(write_oci_config(tmp_path, stranger_key)))
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        publish(data_client(oci, sim, cfg), oci, "x")
    assert (caught.value.status, caught.value.code) == (401, "NotAuthenticated")
    assert sim.accepted == []


def test_key_registered_under_another_id(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey
) -> None:
    # The right public key, but the keyId (user) it is registered under is not the one sent.
    impostor = ApiKey(
        api_key.private_pem,
        api_key.public_pem,
        api_key.fingerprint,
        api_key.tenancy,
        "ocid1.user.oc1..aaaaaaaaasomeoneelse",
    )
    assert_not_authenticated(
        send(signed(api_signer(oci, impostor), sim.url + PUBLISH_PATH)), sim, "unknown keyId"
    )


def test_wrong_private_key_for_a_known_key_id(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey, stranger_key: ApiKey
) -> None:
    forged = ApiKey(
        stranger_key.private_pem,
        stranger_key.public_pem,
        api_key.fingerprint,
        api_key.tenancy,
        api_key.user,
    )
    assert_not_authenticated(
        send(signed(api_signer(oci, forged), sim.url + PUBLISH_PATH)),
        sim,
        "signature does not verify",
    )


def test_signature_over_another_host(oci: ModuleType, sim: OnsSimulator, api_key: ApiKey) -> None:
    real = "https://notification.us-ashburn-1.oraclecloud.com"
    prepared = signed(api_signer(oci, api_key), real + PUBLISH_PATH)
    prepared.url = sim.url + PUBLISH_PATH
    prepared.headers["host"] = sim.url.split("//", 1)[1]
    assert_not_authenticated(send(prepared), sim, "signature does not verify")


def test_signature_over_another_path(oci: ModuleType, sim: OnsSimulator, api_key: ApiKey) -> None:
    prepared = signed(api_signer(oci, api_key), sim.url + PUBLISH_PATH)
    prepared.url = sim.url + f"/20181201/topics/{OTHER_TOPIC}/messages"
    assert_not_authenticated(send(prepared), sim, "signature does not verify")


_GENERIC_HEADERS = ["date", "(request-target)", "host"]
_BODY_HEADERS = ["content-length", "content-type", "x-content-sha256"]


@pytest.mark.parametrize(
    ("generic", "body", "missing"),
    [
        (["date", "(request-target)"], _BODY_HEADERS, "host"),
        (["(request-target)", "host"], _BODY_HEADERS, "date"),
        (["date", "host"], _BODY_HEADERS, "(request-target)"),
        (_GENERIC_HEADERS, ["content-length", "content-type"], "x-content-sha256"),
        (_GENERIC_HEADERS, ["content-type", "x-content-sha256"], "content-length"),
    ],
)  # fmt: skip
def test_required_header_not_signed(
    oci: ModuleType,
    sim: OnsSimulator,
    api_key: ApiKey,
    generic: list[str],
    body: list[str],
    missing: str,
) -> None:
    sim.add_key(f"ST${TOKEN}", api_key.public_pem)
    signer = oci.auth.signers.SecurityTokenSigner(
        TOKEN, api_key.load_private_key(), generic_headers=generic, body_headers=body
    )
    assert_not_authenticated(send(signed(signer, sim.url + PUBLISH_PATH)), sim, missing)


def test_signed_header_missing_from_the_request(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey
) -> None:
    prepared = signed(api_signer(oci, api_key), sim.url + PUBLISH_PATH)
    del prepared.headers["content-type"]
    assert_not_authenticated(send(prepared), sim, "'content-type' is not present")


def test_wrong_algorithm(oci: ModuleType, sim: OnsSimulator, api_key: ApiKey) -> None:
    prepared = signed(api_signer(oci, api_key), sim.url + PUBLISH_PATH)
    authorization = prepared.headers["authorization"]
    assert 'algorithm="rsa-sha256"' in authorization
    prepared.headers["authorization"] = authorization.replace("rsa-sha256", "hmac-sha256")
    assert_not_authenticated(send(prepared), sim, "algorithm")


def test_no_authorization_header(sim: OnsSimulator) -> None:
    response = requests.post(sim.url + PUBLISH_PATH, json={"body": "x"}, timeout=5)
    assert_not_authenticated(response, sim, "Authorization header is missing")


def test_bad_signature_on_get_topic(oci: ModuleType, sim: OnsSimulator, api_key: ApiKey) -> None:
    prepared = signed(api_signer(oci, api_key), f"{sim.url}/20181201/topics/{TOPIC}", None, "GET")
    prepared.url = f"{sim.url}/20181201/topics/{OTHER_TOPIC}"
    assert_not_authenticated(send(prepared), sim, "signature does not verify")


@pytest.mark.parametrize("offset", [300.5, -300.5, 3600.0])
def test_clock_skew_over_five_minutes(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey, clock: FakeClock, offset: float
) -> None:
    clock.now = FIXED_TS + offset
    prepared = signed(
        api_signer(oci, api_key), sim.url + PUBLISH_PATH, headers={"date": FIXED_DATE}
    )
    response = send(prepared)
    assert_not_authenticated(response, sim, f"Date '{FIXED_DATE}' is not within allowed clock skew")
    current = email.utils.formatdate(clock.now, usegmt=True)
    assert f"Current '{current}', valid datetime range: ['" in response.json()["message"]


@pytest.mark.parametrize("offset", [300.0, -300.0, 0.0])
def test_clock_skew_up_to_five_minutes(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey, clock: FakeClock, offset: float
) -> None:
    clock.now = FIXED_TS + offset
    prepared = signed(
        api_signer(oci, api_key), sim.url + PUBLISH_PATH, headers={"date": FIXED_DATE}
    )
    response = send(prepared)
    assert response.status_code == 200, response.text
    assert len(sim.accepted) == 1


def test_clock_skew_through_the_sdk(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any], clock: FakeClock
) -> None:
    clock.advance(-400)  # the host running atomsync is 400 s ahead of the service
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        publish(data_client(oci, sim, config), oci, "x")
    assert caught.value.status == 401
    assert "clock skew" in caught.value.message


# --- API errors ----------------------------------------------------------------------------------


def test_unknown_topic_and_key_without_grant(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any], stranger_key: ApiKey
) -> None:
    sim.add_api_key(stranger_key)
    sim.add_topic("ocid1.onstopic.oc1.iad.aaaaaaaaprivate", allowed_key_ids={stranger_key.key_id})
    client = data_client(oci, sim, config)
    for topic in (
        "ocid1.onstopic.oc1.iad.aaaaaaaamissing",
        "ocid1.onstopic.oc1.iad.aaaaaaaaprivate",
    ):
        with pytest.raises(oci.exceptions.ServiceError) as caught:
            client.publish_message(topic, oci.ons.models.MessageDetails(body="x"))
        assert (caught.value.status, caught.value.code) == (404, "NotAuthorizedOrNotFound")
    assert sim.accepted == []
    assert [r.status for r in sim.rejected] == [404, 404]


def test_message_over_the_size_limit(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]
) -> None:
    # The limit counts the whole request body as the SDK serialises it.
    overhead = len(b'{"body": ""}')
    client = data_client(oci, sim, config)
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        publish(client, oci, "x" * (65536 - overhead + 1))
    assert (caught.value.status, caught.value.code) == (400, "InvalidParameter")
    assert "65537 bytes exceeds the maximum of 65536 bytes" in caught.value.message
    assert publish(client, oci, "x" * (65536 - overhead)).status == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[1, 2]", "CannotParseRequest"),
        (b"not json", "CannotParseRequest"),
        (b"\xff\xfe", "CannotParseRequest"),
        (b'{"title": "t"}', "InvalidParameter"),
        (b'{"body": 5}', "InvalidParameter"),
        (b'{"body": "b", "title": ["t"]}', "InvalidParameter"),
    ],
)
def test_malformed_message(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey, body: bytes, code: str
) -> None:
    response = send(signed(api_signer(oci, api_key), sim.url + PUBLISH_PATH, body))
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert sim.accepted == []


def test_message_type_header(oci: ModuleType, sim: OnsSimulator, api_key: ApiKey) -> None:
    signer = api_signer(oci, api_key)
    url = sim.url + PUBLISH_PATH
    assert send(signed(signer, url, headers={"messageType": "RAW_TEXT"})).status_code == 200
    response = send(signed(signer, url, headers={"messageType": "XML"}))
    assert response.status_code == 400
    assert response.json()["code"] == "InvalidParameter"


def test_unknown_path_and_wrong_method(oci: ModuleType, sim: OnsSimulator, api_key: ApiKey) -> None:
    signer = api_signer(oci, api_key)
    response = send(signed(signer, f"{sim.url}/20181201/subscriptions", None, "GET"))
    assert (response.status_code, response.json()["code"]) == (404, "NotFound")
    response = send(signed(signer, sim.url + PUBLISH_PATH, None, "DELETE"))
    assert (response.status_code, response.json()["code"]) == (405, "MethodNotAllowed")
    assert response.headers["Allow"] == "POST"


def test_rate_limit_slides_with_the_clock(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any], clock: FakeClock
) -> None:
    sim.add_topic(TOPIC, rate_per_minute=3)
    client = data_client(oci, sim, config)
    for _ in range(3):
        publish(client, oci, "ok")
        clock.advance(10)
    for _ in range(2):  # rejected requests do not count towards the limit
        with pytest.raises(oci.exceptions.ServiceError) as caught:
            publish(client, oci, "too many")
        assert (caught.value.status, caught.value.code) == (429, "TooManyRequests")
    clock.advance(30)  # 60 s after the first message: its slot is free again
    publish(client, oci, "ok again")
    with pytest.raises(oci.exceptions.ServiceError):
        publish(client, oci, "too many again")
    # Other topics have their own window, at the simulator's default rate.
    assert (
        client.publish_message(OTHER_TOPIC, oci.ons.models.MessageDetails(body="x")).status == 200
    )
    assert [a.body for a in sim.accepted] == ["ok", "ok", "ok", "ok again", "x"]


def test_reset_forgets_requests_and_rate_windows(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]
) -> None:
    sim.add_topic(TOPIC, rate_per_minute=1)
    client = data_client(oci, sim, config)
    publish(client, oci, "one")
    with pytest.raises(oci.exceptions.ServiceError):
        publish(client, oci, "two")
    sim.reset()
    assert (sim.accepted, sim.rejected) == ([], [])
    publish(client, oci, "three")
    assert [a.body for a in sim.accepted] == ["three"]


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("500", 500, "InternalServerError"),
        ("502", 502, "BadGateway"),
        ("503", 503, "ServiceUnavailable"),
        ("429", 429, "TooManyRequests"),
        ("400", 400, "InvalidParameter"),
        ("401", 401, "NotAuthenticated"),
        ("404", 404, "NotAuthorizedOrNotFound"),
    ],
)
def test_error_faults(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any], fault: str, status: int, code: str
) -> None:
    client = data_client(oci, sim, config)
    sim.inject(fault, times=2)
    for _ in range(2):
        with pytest.raises(oci.exceptions.ServiceError) as caught:
            publish(client, oci, "x", opc_request_id="REQ")
        assert (caught.value.status, caught.value.code) == (status, code)
        assert caught.value.request_id == "REQ"
    assert publish(client, oci, "after").status == 200
    assert [a.body for a in sim.accepted] == ["after"]
    assert [(r.status, r.code) for r in sim.rejected] == [(status, code)] * 2


def test_429_fault_with_retry_after(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]
) -> None:
    sim.inject("429", retry_after=7)
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        publish(data_client(oci, sim, config), oci, "x")
    assert caught.value.headers["Retry-After"] == "7"


def test_faults_apply_in_order_and_per_topic(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]
) -> None:
    client = data_client(oci, sim, config)
    sim.inject("503", topic_id=OTHER_TOPIC)
    sim.inject("500")
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        publish(client, oci, "first")  # TOPIC: the 503 is not for it, the 500 is
    assert caught.value.status == 500
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        client.publish_message(OTHER_TOPIC, oci.ons.models.MessageDetails(body="x"))
    assert caught.value.status == 503
    assert publish(client, oci, "second").status == 200
    assert sim.pending_faults() == []


def test_faults_come_after_signature_checks(
    oci: ModuleType, sim: OnsSimulator, api_key: ApiKey, config: dict[str, Any]
) -> None:
    sim.inject("500")
    prepared = signed(api_signer(oci, api_key), sim.url + PUBLISH_PATH)
    prepared.body = b'{"body": "HELLO"}'
    assert send(prepared).status_code == 401
    with pytest.raises(oci.exceptions.ServiceError) as caught:  # the fault is still pending
        publish(data_client(oci, sim, config), oci, "x")
    assert caught.value.status == 500


def test_reset_fault(oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]) -> None:
    client = data_client(oci, sim, config)
    sim.inject("reset")
    with pytest.raises(oci.exceptions.RequestException, match="reset"):
        publish(client, oci, "lost")
    assert sim.accepted == []
    assert [(r.status, r.code) for r in sim.rejected] == [(0, "ConnectionReset")]
    assert publish(client, oci, "after").status == 200


def test_slow_fault_accepts_after_the_client_gave_up(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]
) -> None:
    client = data_client(oci, sim, config, read_timeout=0.2)
    sim.inject("slow", delay=0.5)
    with pytest.raises(oci.exceptions.RequestException):
        publish(client, oci, "answer lost")
    assert sim.accepted == []
    (accepted,) = sim.wait_for(1, timeout=5)
    assert accepted.body == "answer lost"


def test_stop_cuts_a_slow_reply_short(
    oci: ModuleType, api_key: ApiKey, config: dict[str, Any]
) -> None:
    sim = OnsSimulator().start()
    sim.add_api_key(api_key)
    sim.add_topic(TOPIC)
    sim.inject("slow", delay=30)
    client = data_client(oci, sim, config)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            publish(client, oci, "never answered")
        except Exception as error:
            errors.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while sim.pending_faults() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    caller.join(timeout=5)
    assert not caller.is_alive()
    assert len(errors) == 1
    assert sim.accepted == []
    assert [(r.status, r.code) for r in sim.rejected] == [(0, "ConnectionAborted")]


def test_stop_closes_keep_alive_connections(
    oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]
) -> None:
    client = data_client(oci, sim, config)
    publish(client, oci, "before")
    sim.stop()
    with pytest.raises(oci.exceptions.RequestException):
        publish(client, oci, "after")
    assert len(sim.accepted) == 1


def test_restart_keeps_the_url(oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]) -> None:
    url = sim.url
    sim.stop()
    sim.start()
    assert sim.url == url
    assert publish(data_client(oci, sim, config), oci, "back").status == 200


@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("418", {}),
        ("slow", {}),
        ("slow", {"delay": -1}),
        ("429", {"retry_after": 1.5}),
        ("500", {"delay": 1}),
    ],
)
def test_invalid_faults(sim: OnsSimulator, fault: str, params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sim.inject(fault, **params)
    with pytest.raises(ValueError):
        sim.inject("500", times=0)
    assert sim.pending_faults() == []


def test_wait_for_times_out_with_a_useful_message(sim: OnsSimulator) -> None:
    requests.post(sim.url + PUBLISH_PATH, json={"body": "x"}, timeout=5)
    with pytest.raises(TimeoutError, match=r"expected 1 accepted.*got 0; 1 rejected.*401"):
        sim.wait_for(1, timeout=0.05)


# --- admin API -----------------------------------------------------------------------------------


def test_admin_api(oci: ModuleType, sim: OnsSimulator, config: dict[str, Any]) -> None:
    admin = sim.url + "/_sim"
    response = requests.post(
        f"{admin}/faults", json={"fault": "503", "times": 2, "topic_id": None}, timeout=5
    )
    assert response.status_code == 200
    assert requests.get(f"{admin}/faults", timeout=5).json() == [
        {"fault": "503", "times": 2, "topic_id": None}
    ]
    client = data_client(oci, sim, config)
    with pytest.raises(oci.exceptions.ServiceError):
        publish(client, oci, "x")
    assert requests.delete(f"{admin}/faults", timeout=5).json() == {"cleared": 1}
    publish(client, oci, "hello", title="t")

    (message,) = requests.get(f"{admin}/messages", timeout=5).json()
    assert message["topic_id"] == TOPIC
    assert (message["title"], message["body"]) == ("t", "hello")
    assert message["message_id"] == sim.accepted[0].message_id
    (rejection,) = requests.get(f"{admin}/rejections", timeout=5).json()
    assert (rejection["status"], rejection["code"]) == (503, "ServiceUnavailable")

    response = requests.post(f"{admin}/faults", json={"fault": "slow"}, timeout=5)
    assert (response.status_code, response.json()["code"]) == (400, "InvalidParameter")
    response = requests.post(
        f"{admin}/faults", json={"fault": "slow", "delay": 0.1, "topic_id": OTHER_TOPIC}, timeout=5
    )
    assert response.status_code == 200
    assert sim.pending_faults() == [
        {"fault": "slow", "times": 1, "topic_id": OTHER_TOPIC, "delay": 0.1}
    ]
    assert requests.get(f"{admin}/nothing", timeout=5).status_code == 404
    assert requests.put(f"{admin}/messages", timeout=5).status_code == 405
