"""The controller's Ed25519 signing key: generated on first start, kept in the data dir.

``controller_ed25519.key`` (private, mode 0600) and ``controller_ed25519.pub`` (the raw
public key as hex, to provision clusters with).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nacl.signing import SigningKey

from devices.signing import key_id

log = logging.getLogger(__name__)

__all__ = ["load_or_create_signing_key", "public_key_path"]


def public_key_path(data_dir: Path) -> Path:
    return data_dir / "controller_ed25519.pub"


def load_or_create_signing_key(data_dir: Path) -> SigningKey:
    data_dir.mkdir(parents=True, exist_ok=True)
    priv = data_dir / "controller_ed25519.key"
    if priv.exists():
        key = SigningKey(bytes.fromhex(priv.read_text().strip()))
    else:
        key = SigningKey.generate()
        tmp = priv.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(bytes(key).hex() + "\n")
        os.replace(tmp, priv)
        log.info("generated controller signing key %s in %s", key_id(key.verify_key), priv)
    pub = public_key_path(data_dir)
    pub_hex = bytes(key.verify_key).hex() + "\n"
    if not pub.exists() or pub.read_text() != pub_hex:
        pub.write_text(pub_hex)
    return key
