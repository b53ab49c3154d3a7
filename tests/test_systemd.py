"""The systemd units pass `systemd-analyze verify` and rate 2.0 or better for exposure.

Skipped where systemd-analyze does not exist. `verify` reports unknown keys and bad values
as warnings with exit 0, so any output on stderr counts as a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
EXECUTABLE = Path(sys.executable).parent / "atomsync"


def installed_copy(tmp_path: Path, unit: str) -> Path:
    """The unit as installed: ExecStart pointing at a real atomsync (verify checks it)."""
    text = (ROOT / "systemd" / unit).read_text()
    text = text.replace("/opt/atomsync/venv/bin/atomsync", str(EXECUTABLE))
    path = tmp_path / unit
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("unit", "instance"),
    [("atomsync.service", "atomsync.service"), ("atomsync@.service", "atomsync@pod1.service")],
)
def test_unit_verifies_and_is_hardened(tmp_path: Path, unit: str, instance: str) -> None:
    installed_copy(tmp_path, unit)
    target = str(tmp_path / instance)
    verify = subprocess.run(
        [str(ANALYZE), "verify", target], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", "--threshold=20", target],
        capture_output=True,
        text=True,
        check=False,
    )
    assert security.returncode == 0, security.stdout[-2000:]
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match is not None, security.stdout[-2000:]
    assert float(match.group(1)) <= 2.0


def test_units_keep_the_contract() -> None:
    for unit in ("atomsync.service", "atomsync@.service"):
        text = (ROOT / "systemd" / unit).read_text()
        for line in (
            "Type=notify",
            "Restart=on-failure",
            "RestartPreventExitStatus=78",
            "WatchdogSec=",
            "DynamicUser=yes",
            "ConfigurationDirectory=atomsync",
        ):
            assert line in text, f"{unit} lacks {line}"
    template = (ROOT / "systemd" / "atomsync@.service").read_text()
    assert "StateDirectory=atomsync/%i" in template and "-c /etc/atomsync/%i.yaml" in template
