"""Configuration: contract keys, defaults, interpolation, and errors that name the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from atomsync import config
from atomsync.errors import EXIT_CONFIG, ConfigError

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """
hcm:
  base_url: https://pod.fa.us-ashburn-1.oraclecloud.com
  username: INTEGRATION_USER
  password: ${HCM_PASSWORD}
publisher:
  topic_id: ocid1.onstopic.oc1..aaaa
"""
ENV = {"HCM_PASSWORD": "s3cret-pass"}


def parse(text: str, env: dict[str, str] | None = None, tmp: Path | None = None) -> config.Config:
    source = (tmp / "atomsync.yaml") if tmp else None
    return config.parse(textwrap.dedent(text), env=ENV if env is None else env, source=source)


def error(text: str, env: dict[str, str] | None = None, tmp: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, env, tmp)
    assert info.value.exit_code == EXIT_CONFIG
    return info.value


def test_minimal_config_gets_the_contract_defaults() -> None:
    cfg = parse(MINIMAL)
    assert cfg.hcm.password == "s3cret-pass"
    assert (cfg.hcm.page_size, cfg.hcm.timeout_seconds, cfg.hcm.verify_tls) == (25, 30.0, True)
    assert (cfg.poll.interval_seconds, cfg.poll.overlap_seconds) == (30.0, 300.0)
    [feed] = cfg.feeds
    assert (feed.name, feed.workspace, feed.cursor, feed.start_at.kind) == (
        "newhire",
        "employee",
        "updated",
        "now",
    )
    assert feed.path == "/hcmRestApi/atomservlet/employee/newhire"
    assert cfg.publisher.kind == "oci_notifications" and cfg.publisher.auth == "api_key"
    assert cfg.publisher.oci_profile == "DEFAULT" and cfg.publisher.endpoint is None
    assert cfg.publisher.max_messages_per_minute == 60
    assert (cfg.logging.level, cfg.logging.format) == ("INFO", "text")
    assert cfg.metrics.listen is None and cfg.metrics.textfile is None
    assert cfg.state.dir == Path.cwd() / "state"
    assert cfg.state.retention_seconds >= cfg.poll.sweep_lookback_seconds


def test_example_config_documents_every_key_and_loads() -> None:
    cfg = config.load(ROOT / "config.example.yaml", {"HCM_PASSWORD": "x"})
    assert cfg.feeds[0].name == "newhire"
    text = (ROOT / "config.example.yaml").read_text()
    for section in (
        config.HcmConfig,
        config.PollConfig,
        config.StateConfig,
        config.PublisherConfig,
        config.LoggingConfig,
        config.MetricsConfig,
    ):
        for name in section.__dataclass_fields__:
            if name == "secret_files":  # derived from the *_file keys, not a key itself
                continue
            assert f"{name}:" in text, f"config.example.yaml does not mention {name}"
    for name in ("password_file", "hmac_secret_file", "bearer_token_file", "filter", "start_at"):
        assert f"{name}:" in text


def test_secrets_never_appear_in_repr() -> None:
    cfg = parse(
        MINIMAL + "  kind: webhook\n  url: https://x.example/h\n  hmac_secret: hm4c-s3cret\n"
    )
    assert "s3cret-pass" not in repr(cfg) and "hm4c-s3cret" not in repr(cfg)
    basic = "SU5URUdSQVRJT05fVVNFUjpzM2NyZXQtcGFzcw=="  # INTEGRATION_USER:s3cret-pass
    assert set(cfg.secrets()) == {"s3cret-pass", "hm4c-s3cret", basic}


def test_missing_environment_variable_names_key_and_variable() -> None:
    exc = error(MINIMAL, env={})
    assert exc.key == "hcm.password" and "HCM_PASSWORD" in str(exc)


def test_dollar_dollar_is_a_literal_dollar() -> None:
    assert parse(MINIMAL, env={"HCM_PASSWORD": "a$$b"}).hcm.password == "a$$b"
    text = MINIMAL.replace("${HCM_PASSWORD}", "pa$$word")
    assert parse(text, env={}).hcm.password == "pa$word"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (MINIMAL.replace("username", "usename"), "hcm.usename", "did you mean 'username'"),
        (MINIMAL + "pol:\n  interval_seconds: 5\n", "pol", "did you mean 'poll'"),
        (MINIMAL.replace("  username: INTEGRATION_USER\n", ""), "hcm.username", "missing"),
        (MINIMAL + "poll:\n  interval_seconds: fast\n", "poll.interval_seconds", "number"),
        (MINIMAL + "poll:\n  interval_seconds: 0\n", "poll.interval_seconds", "greater than 0"),
        (MINIMAL + "poll:\n  interval_secs: 1\n", "poll.interval_secs", "interval_seconds"),
        (
            MINIMAL.replace("oraclecloud.com", "oraclecloud.com/hcmRestApi"),
            "hcm.base_url",
            "pod URL",
        ),
        (MINIMAL.replace("https://pod", "ftp://pod"), "hcm.base_url", "http(s) URL"),
        (MINIMAL.replace("https://pod", "https://u:pw@pod"), "hcm.base_url", "user or password"),
        (MINIMAL.replace("https://pod", "http://pod"), "hcm.base_url", "unencrypted"),
        (MINIMAL + "feeds:\n  - name: newhires\n", "feeds[0].name", "did you mean 'newhire'"),
        (MINIMAL + "feeds:\n  - cancelworkrelationship\n", "feeds[0].name", "'cancelworkrelship'"),
        (MINIMAL + "feeds:\n  - newhire\n  - newhire\n", "feeds[1].name", "twice"),
        (MINIMAL + "feeds:\n  - name: newhire\n    cursor: created\n", "feeds[0].cursor", "one of"),
        (MINIMAL + "feeds:\n  - name: newhire\n    start_at: soon\n", "feeds[0].start_at", "ISO"),
        (MINIMAL + "feeds:\n  - name: newhire\n    title: '{oops'\n", "feeds[0].title", "template"),
        (MINIMAL + "feeds: []\n", "feeds", "non-empty"),
        (MINIMAL + "hcm2: {}\n", "hcm2", "unknown key"),
        (
            MINIMAL.replace(
                "  topic_id: ocid1.onstopic.oc1..aaaa\n", "  kind: oci_notifications\n"
            ),
            "publisher.topic_id",
            "required",
        ),
        (MINIMAL + "  kind: webhook\n", "publisher.url", "required"),
        (MINIMAL + "  kind: sns\n", "publisher.kind", "one of"),
        (MINIMAL + "logging:\n  level: LOUD\n", "logging.level", "one of"),
        (MINIMAL + "metrics:\n  listen: 9464\n", "metrics.listen", "HOST:PORT"),
        (MINIMAL + "state:\n  retention_seconds: 60\n", "state.retention_seconds", "look-back"),
        (MINIMAL + "hcm:\n  page_size: 0\n", "hcm", ""),  # duplicate section: YAML keeps last
    ],
)
def test_bad_values_name_their_key(text: str, key: str, words: str) -> None:
    exc = error(text)
    assert exc.key == key or exc.key.startswith(key), str(exc)
    assert words in str(exc)


def test_yaml_syntax_error_says_where() -> None:
    exc = error("hcm:\n  base_url: [unclosed\n")
    assert "line" in str(exc)


def test_not_a_mapping() -> None:
    assert "mapping" in str(error("- just\n- a list\n"))


def test_password_file_strips_one_newline_and_is_exclusive(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    text = MINIMAL.replace("password: ${HCM_PASSWORD}", "password_file: pw")
    assert parse(text, tmp=tmp_path).hcm.password == "from-file"  # relative to the config
    both = MINIMAL.replace("password: ${HCM_PASSWORD}", "password: x\n  password_file: pw")
    assert error(both, tmp=tmp_path).key == "hcm.password_file"
    missing = MINIMAL.replace("password: ${HCM_PASSWORD}", "password_file: nope")
    exc = error(missing, tmp=tmp_path)
    assert exc.key == "hcm.password_file" and "nope" in str(exc)


def test_systemd_credential_is_used_when_no_password_is_configured(tmp_path: Path) -> None:
    (tmp_path / "hcm_password").write_text("cred-pass\n")
    text = MINIMAL.replace("  password: ${HCM_PASSWORD}\n", "")
    cfg = parse(text, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert cfg.hcm.password == "cred-pass"
    assert error(text, env={}).key == "hcm.password"


def test_loopback_http_is_fine_and_insecure_http_can_be_forced() -> None:
    assert parse(
        MINIMAL.replace("https://pod.fa.us-ashburn-1.oraclecloud.com", "http://127.0.0.1:8080")
    )
    cfg = parse(
        MINIMAL.replace("https://pod", "http://pod").replace(
            "  username:", "  allow_insecure_http: true\n  username:"
        )
    )
    assert cfg.hcm.allow_insecure_http


def test_feed_forms_overrides_and_aliases() -> None:
    cfg = parse(
        MINIMAL
        + """
feeds:
  - termination
  - name: position
    start_at: 2024-03-04T00:00:00Z
    cursor: published
  - name: newhire-emp
    collection: newhire
    topic_id: ocid1.onstopic.oc1..other
    filter:
      WorkerType: [EMP, CWK]
  - name: legacy
    collection: jobs
    path: /hcmCoreApi/atomservlet/workstructures/jobs
  - name: customfeed
    workspace: custom
"""
    )
    term, pos, emp, legacy, custom = cfg.feeds
    assert term.workspace == "employee" and term.title.startswith("Terminated:")
    assert pos.collection == "positions" and pos.workspace == "workstructures"
    assert pos.start_at.kind == "at" and pos.start_at.at_ms == 1709510400000
    assert pos.cursor == "published"
    assert emp.collection == "newhire" and emp.topic_id == "ocid1.onstopic.oc1..other"
    assert emp.filters == (("WorkerType", frozenset({"EMP", "CWK"})),)
    assert legacy.path == "/hcmCoreApi/atomservlet/workstructures/jobs"
    assert custom.path == "/hcmRestApi/atomservlet/custom/customfeed" and custom.title == ""
    assert cfg.feed("legacy") is legacy
    with pytest.raises(ConfigError, match="no feed named"):
        cfg.feed("nope")


def test_topic_per_feed_can_replace_the_default_topic() -> None:
    text = MINIMAL.replace("  topic_id: ocid1.onstopic.oc1..aaaa\n", "  kind: oci_notifications\n")
    cfg = parse(text + "feeds:\n  - name: newhire\n    topic_id: ocid1.onstopic.oc1..t\n")
    assert cfg.publisher.topic_id is None and cfg.feeds[0].topic_id == "ocid1.onstopic.oc1..t"


def test_numbers_from_environment_strings_are_accepted() -> None:
    text = MINIMAL + "poll:\n  interval_seconds: ${INTERVAL}\n"
    assert parse(text, env={**ENV, "INTERVAL": "0.5"}).poll.interval_seconds == 0.5


def test_verify_tls_bundle_must_exist(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    text = MINIMAL.replace("  username:", "  verify_tls: ca.pem\n  username:")
    assert parse(text, tmp=tmp_path).hcm.verify_tls == str(tmp_path / "ca.pem")
    assert error(text.replace("ca.pem", "gone.pem"), tmp=tmp_path).key == "hcm.verify_tls"


def test_state_dir_from_systemd() -> None:
    cfg = parse(MINIMAL, env={**ENV, "STATE_DIRECTORY": "/var/lib/atomsync:/var/lib/other"})
    assert cfg.state.dir == Path("/var/lib/atomsync")


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.find_config("given.yaml", {"ATOMSYNC_CONFIG": "env.yaml"}) == Path("given.yaml")
    assert config.find_config(None, {"ATOMSYNC_CONFIG": "env.yaml"}) == Path("env.yaml")
    (tmp_path / "atomsync.yaml").write_text("")
    assert config.find_config(None, {}) == Path("atomsync.yaml")
