"""Passwords (scrypt) and opaque bearer tokens (stored hashed, expiring)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controller.db.models import ApiToken, User, utcnow

__all__ = [
    "ensure_admin",
    "hash_password",
    "issue_token",
    "user_for_token",
    "verify_password",
]

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _alg, n, r, p, salt, dk = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=32)
        return hmac.compare_digest(got, base64.b64decode(dk))
    except (ValueError, TypeError):
        return False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: Session, username: str, ttl_s: int) -> str:
    token = secrets.token_urlsafe(32)
    db.execute(delete(ApiToken).where(ApiToken.expires_at < utcnow()))
    db.add(ApiToken(token_sha256=_digest(token), username=username,
                    expires_at=utcnow() + timedelta(seconds=ttl_s)))
    db.commit()
    return token


def user_for_token(db: Session, token: str) -> User | None:
    row = db.get(ApiToken, _digest(token))
    if row is None or row.expires_at < utcnow():
        return None
    return db.get(User, row.username)


def ensure_admin(db: Session, password: str | None) -> str | None:
    """Create the bootstrap ``admin``; returns a generated password when one was made."""
    admin = db.scalar(select(User).where(User.username == "admin"))
    generated = None
    if admin is None:
        if not password:
            password = generated = secrets.token_urlsafe(12)
        db.add(User(username="admin", password_hash=hash_password(password), role="admin"))
    elif password and not verify_password(password, admin.password_hash):
        admin.password_hash = hash_password(password)
    db.commit()
    return generated
