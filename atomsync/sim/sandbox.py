"""Both simulators, a throwaway API key and a matching atomsync configuration.

Used by `atomsync simulate`, `atomsync demo`, the end-to-end tests and the benchmarks, so
they all exercise the same real parts: HTTP on loopback and the oci SDK's signer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from atomsync.sim.hcm import HcmSimulator
from atomsync.sim.keys import ApiKey, generate_api_key, write_oci_config
from atomsync.sim.ons import OnsSimulator

TOPIC_ID = "ocid1.onstopic.oc1.iad.aaaaaaaasandboxtopic"
USERNAME = "INTEGRATION_USER"
PASSWORD = "sandbox-Pa55word-9f2c"  # distinctive, so tests can scan output for it


class Sandbox:
    def __init__(
        self,
        directory: Path,
        *,
        hcm_port: int = 0,
        ons_port: int = 0,
        rate_per_minute: int = 6000,  # as fast as config() paces; set both to study limits
        password: str = PASSWORD,
        seed: int = 0,
    ) -> None:
        self.dir = directory
        self.password = password
        self.hcm = HcmSimulator(username=USERNAME, password=password, port=hcm_port, seed=seed)
        self.ons = OnsSimulator(port=ons_port, rate_per_minute=rate_per_minute)
        self.key: Optional[ApiKey] = None
        self.oci_config: Optional[Path] = None
        self.topic_id = TOPIC_ID

    def start(self) -> Sandbox:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = generate_api_key()
        self.oci_config = write_oci_config(self.dir, self.key)
        password_file = self.dir / "hcm_password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        self.hcm.start()
        self.ons.start()
        self.ons.add_api_key(self.key)
        self.ons.add_topic(self.topic_id, name="atomsync-sandbox")
        return self

    def stop(self) -> None:
        self.hcm.stop()
        self.ons.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config(self, **sections: Any) -> dict[str, Any]:
        """An atomsync configuration for this sandbox; `sections` override parts of it,
        e.g. `poll={"interval_seconds": 0.5}` (merged) or `feeds=[...]` (replaced)."""
        doc: dict[str, Any] = {
            "hcm": {
                "base_url": self.hcm.url,
                "username": USERNAME,
                "password_file": str(self.dir / "hcm_password"),
                "timeout_seconds": 5,
            },
            "poll": {"interval_seconds": 1, "overlap_seconds": 300},
            "feeds": [{"name": "newhire", "start_at": "beginning"}],
            "state": {"dir": str(self.dir / "state")},
            "publisher": {
                "kind": "oci_notifications",
                "topic_id": self.topic_id,
                "endpoint": self.ons.url,
                "oci_config_file": str(self.oci_config),
                "max_messages_per_minute": 6000,
            },
        }
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(doc.get(name), dict):
                doc[name] = {**doc[name], **value}
            else:
                doc[name] = value
        return doc

    def write_config(self, path: Optional[Path] = None, **sections: Any) -> Path:
        # JSON is YAML, and needs no quoting rules for URLs, paths and times.
        path = path or self.dir / "atomsync.yaml"
        path.write_text(json.dumps(self.config(**sections), indent=2) + "\n")
        return path
