"""Ed25519 signatures of a release's ``SHA256SUMS`` (``update.public_key``).

The release server's checksums prove a download is what the server meant to send; a
signature proves the server was not the one who chose it. With a public key configured,
``SHA256SUMS.sig`` beside ``SHA256SUMS`` is mandatory and must verify over the file's
exact bytes, or nothing is installed.

Formats, so that any Ed25519 tool can produce them: the public key as 64 hex digits or
base64 of its 32 raw bytes (``openssl pkey -pubout`` PEM is accepted too); the
signature as its 64 raw bytes, or as hex or base64 text.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

_HEX = re.compile(r"^[0-9a-fA-F]+$")


def _raw(text: str, size: int) -> bytes | None:
    """``text`` as ``size`` bytes, from hex or base64; None when it is neither."""
    text = text.strip()
    if len(text) == 2 * size and _HEX.match(text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def public_key(text: str) -> Ed25519PublicKey:
    """The configured key; ValueError saying what was expected."""
    if "BEGIN PUBLIC KEY" in text:
        try:
            key = load_pem_public_key(text.encode())
        except ValueError:
            key = None
        if isinstance(key, Ed25519PublicKey):
            return key
        raise ValueError("is a PEM public key, but not a valid Ed25519 one")
    raw = _raw(text, 32)
    if raw is None:
        raise ValueError(
            "must be an Ed25519 public key: 64 hex digits or base64 of its 32 bytes "
            "(or a PEM 'BEGIN PUBLIC KEY' block)"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def signature(body: bytes) -> bytes | None:
    """A signature file's 64 bytes (raw, or hex / base64 text); None when malformed."""
    if len(body) == 64:
        return body
    try:
        return _raw(body.decode("ascii"), 64)
    except UnicodeDecodeError:
        return None


def verifies(key: Ed25519PublicKey, data: bytes, sig: bytes) -> bool:
    try:
        key.verify(sig, data)
    except InvalidSignature:
        return False
    return True
