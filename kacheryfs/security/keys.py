"""ed25519 keys and signatures in the original daemon's encodings (docs/PROTOCOL.md 8.2, 8.3).

    node id, feed id   lowercase hex of the 32-byte public key
    feed private key   lowercase hex of the 32-byte seed
    public.pem         SPKI DER (302a300506032b6570032100 || pk) in base64 on one line
    private.pem        PKCS#8 DER (302e020100300506032b657004220420 || seed) in base64 on one line
    signature          lowercase hex of the 64-byte signature over SHA1(canonical_json(body))
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kachery_client.canonical_json import canonical_json

_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


@dataclass(frozen=True)
class KeyPair:
    seed: bytes          # 32 bytes: the private key
    public: bytes        # 32 bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_seed(os.urandom(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        if len(seed) != 32:
            raise ValueError("an ed25519 seed is 32 bytes")
        pk = Ed25519PrivateKey.from_private_bytes(seed).public_key()
        return cls(seed, pk.public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def from_seed_hex(cls, seed_hex: str) -> KeyPair:
        return cls.from_seed(bytes.fromhex(seed_hex))

    @property
    def public_hex(self) -> str:
        return self.public.hex()

    @property
    def seed_hex(self) -> str:
        return self.seed.hex()

    def sign(self, message: bytes) -> str:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message).hex()

    def sign_body(self, body: Any) -> str:
        """The original's signature of a JSON body: over the 20 raw bytes of SHA1(canonical JSON)."""
        return self.sign(_body_digest(body))


def verify(public_hex: str, message: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            bytes.fromhex(signature_hex), message)
        return True
    except (InvalidSignature, ValueError):
        return False


def verify_body(public_hex: str, body: Any, signature_hex: str, *, accept_legacy: bool = True) -> bool:
    """Check a body signature; the legacy scheme (no SHA-1 prehash) is accepted on read only."""
    if verify(public_hex, _body_digest(body), signature_hex):
        return True
    return accept_legacy and verify(public_hex, canonical_json(body).encode("utf-8"), signature_hex)


def _body_digest(body: Any) -> bytes:
    return hashlib.sha1(canonical_json(body).encode("utf-8")).digest()


# ---- PEM files ----------------------------------------------------------------------------

def public_pem(public: bytes) -> str:
    b64 = base64.b64encode(_SPKI_PREFIX + public).decode()
    return f"-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n"


def private_pem(seed: bytes) -> str:
    b64 = base64.b64encode(_PKCS8_PREFIX + seed).decode()
    return f"-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"


def parse_private_pem(text: str) -> bytes:
    """The 32-byte seed from a private.pem (line 0 header, line 1 base64, line 2 footer)."""
    lines = text.split("\n")
    if len(lines) < 3 or lines[0] != "-----BEGIN PRIVATE KEY-----" or lines[2] != "-----END PRIVATE KEY-----":
        raise ValueError("not a one-line ed25519 PRIVATE KEY PEM")
    der = base64.b64decode(lines[1])
    if not der.startswith(_PKCS8_PREFIX) or len(der) != len(_PKCS8_PREFIX) + 32:
        raise ValueError("not an ed25519 PKCS#8 key")
    return der[len(_PKCS8_PREFIX):]


def load_or_create_node_keys(storage_dir: Path) -> KeyPair:
    """The node identity: private.pem/public.pem (0600), created atomically on first start.

    Refuses a private.pem readable by group or others, as the original does.
    """
    priv_path, pub_path = storage_dir / "private.pem", storage_dir / "public.pem"
    if priv_path.exists():
        mode = priv_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{priv_path} is readable by others (mode {mode:o}); chmod 600 it")
        keys = KeyPair.from_seed(parse_private_pem(priv_path.read_text()))
    else:
        keys = KeyPair.generate()
        write_private_file(priv_path, private_pem(keys.seed).encode())
    if not pub_path.exists() or pub_path.read_text() != public_pem(keys.public):
        write_private_file(pub_path, public_pem(keys.public).encode())
    return keys


def write_private_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write through a temp name created with `mode` (never briefly wider), fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
