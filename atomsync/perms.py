"""Warnings about secrets that others can read: other users of the machine, or anyone on
the network path when TLS verification is off.

A configuration file readable by others is normal (under systemd's DynamicUser= it must
be), so it is flagged only when it holds a secret itself. Files that exist to hold a secret
(password_file, hmac_secret_file, bearer_token_file, the OCI API key) are flagged whenever
group or others can read them.
"""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path
from typing import Optional

from atomsync.config import Config


def readable_by_others(path: str) -> Optional[str]:
    """ "group" or "others" when they can read the file, else None (also when it is absent)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & stat.S_IROTH:
        return "others"
    if mode & stat.S_IRGRP:
        return "group"
    return None


def oci_key_file(cfg: Config) -> Optional[str]:
    """The private key the OCI config names, read without importing the oci SDK."""
    pub = cfg.publisher
    if pub.kind != "oci_notifications" or pub.auth != "api_key":
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(os.path.expanduser(pub.oci_config_file), encoding="utf-8")
        key = parser.get(pub.oci_profile, "key_file", fallback=None)
    except (configparser.Error, UnicodeDecodeError):
        return None
    return os.path.expanduser(key) if key else None


def warnings(cfg: Config) -> list[str]:
    out = []
    if cfg.hcm.verify_tls is False:
        out.append(
            "hcm.verify_tls is false: HCM's certificate is not checked, so anyone on the path "
            "can read the password; give a CA bundle path instead"
        )
    if cfg.source is not None:
        who = readable_by_others(str(cfg.source))
        if who and _holds_secret(cfg.source, cfg.secrets()):
            out.append(
                f"{cfg.source} holds a secret and is readable by {who}: chmod 600 it, or move "
                "the secret to a file (password_file:), the environment or a systemd credential"
            )
    files = [f for f in (cfg.hcm.password_file, *cfg.publisher.secret_files) if f]
    key = oci_key_file(cfg)
    for path in [*files, *([key] if key else [])]:
        who = readable_by_others(path)
        if who:
            what = "the OCI API private key" if path == key else "a secret"
            out.append(f"{path} holds {what} and is readable by {who}: chmod 600 {path}")
    return out


def _holds_secret(path: Path, secrets: tuple[str, ...]) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return any(secret in text for secret in secrets)
