"""API signing keys and OCI config files for tests and the simulators.

The key pair is generated locally so that the ONS simulator can hold the public half and verify
real signatures made by the `oci` SDK with the private half. The config file is written in the
form `oci.config.from_file` reads, so code under test loads its key exactly as it would in
production.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# Shaped like real OCIDs so that `oci.config.validate_config` accepts them.
DEFAULT_TENANCY = "ocid1.tenancy.oc1..aaaaaaaaatomsyncsimulatedtenancy"
DEFAULT_USER = "ocid1.user.oc1..aaaaaaaaatomsyncsimulateduser"

KEY_FILE_NAME = "oci_api_key.pem"
CONFIG_FILE_NAME = "oci_config"


@dataclass(frozen=True)
class ApiKey:
    private_pem: bytes  # PKCS#8 PEM, unencrypted
    public_pem: bytes  # SubjectPublicKeyInfo PEM
    fingerprint: str  # as the OCI console shows it: aa:bb:...:ff (16 pairs)
    tenancy: str
    user: str

    @property
    def key_id(self) -> str:
        """The keyId an API-key signer puts in the Authorization header."""
        return f"{self.tenancy}/{self.user}/{self.fingerprint}"

    def load_private_key(self) -> rsa.RSAPrivateKey:
        """The private key as an object, for signers that take one (SecurityTokenSigner)."""
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError("API signing keys are RSA keys")
        return key


def fingerprint_of(public_pem: bytes) -> str:
    """MD5 over the DER SubjectPublicKeyInfo, the way OCI derives an API key's fingerprint."""
    public_key = serialization.load_pem_public_key(public_pem)
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Not a security use: the fingerprint is an identifier, and FIPS builds refuse plain md5().
    digest = hashlib.md5(der, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def generate_api_key(
    *, tenancy: str = DEFAULT_TENANCY, user: str = DEFAULT_USER, bits: int = 2048
) -> ApiKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ApiKey(
        private_pem=private_pem,
        public_pem=public_pem,
        fingerprint=fingerprint_of(public_pem),
        tenancy=tenancy,
        user=user,
    )


def write_oci_config(
    directory: Path,
    key: ApiKey,
    *,
    profile: str = "DEFAULT",
    region: str = "us-ashburn-1",
) -> Path:
    """Write the private key and a one-profile OCI config file; return the config's path.

    Both files are 0600, as the OCI CLI insists for real keys. `key_file` is absolute so the
    config works from any working directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_path = (directory / KEY_FILE_NAME).resolve()
    config_path = directory / CONFIG_FILE_NAME
    _write_private(key_path, key.private_pem)
    lines = [
        f"[{profile}]",
        f"user={key.user}",
        f"fingerprint={key.fingerprint}",
        f"tenancy={key.tenancy}",
        f"region={region}",
        f"key_file={key_path}",
        "",
    ]
    _write_private(config_path, "\n".join(lines).encode("utf-8"))
    return config_path


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start so the key is never readable by others, even briefly;
    # chmod as well because O_CREAT's mode does not apply to a file that already exists.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)
