"""Optional encryption of embeddings and images at rest: AES-256-GCM with a key file.

Each sealed value is bound to where it belongs (subject, face, model) through GCM's associated data, so a value
copied into another subject's record does not open.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.atomic import create_exclusive

KEY_BYTES = 32
NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value cannot be opened (no key, another key, or the value was moved or altered)."""


def create_key_file(path: Path) -> None:
    """Write a new random key (base64, mode 600); refuses to overwrite one, which would lock the gallery."""
    create_exclusive(path, base64.b64encode(AESGCM.generate_key(bit_length=8 * KEY_BYTES)).decode() + "\n")


class Sealer:
    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise SealError(f"the gallery key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> Sealer:
        try:
            key = base64.b64decode(path.read_text().strip(), validate=True)
        except (OSError, ValueError) as exc:
            raise SealError(f"cannot read the gallery key {path}: {exc}") from None
        return cls(key)

    def seal(self, data: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise SealError(f"a sealed gallery value ({context}) does not open with this key") from None
