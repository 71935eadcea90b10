"""Passwords (scrypt), logins and opaque bearer tokens (stored hashed, expiring).

* **Logins** (:func:`authenticate`): a wrong password costs the same time whether the
  account exists or not (an unknown name is checked against a dummy hash), so names cannot
  be found by timing. ``LOCK_AFTER`` wrong passwords in a row lock the account for
  ``LOCK_FOR``; a client address that fails ``THROTTLE_FAILURES`` times within
  ``THROTTLE_WINDOW`` is refused for the rest of the window, whatever names it tries.
* **Passwords** (:func:`check_password`): at least ``PASSWORD_MIN`` characters, not the
  account's name, not one of the most common passwords.
* **Tokens**: a login gives an access token (``token_ttl_s``, sent with each request) and a
  refresh token (``refresh_ttl_s``), which :func:`refresh` trades for a new pair once.
  Logout, a password change, disabling or deleting an account revoke its tokens.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controller.db.models import ApiToken, User, utcnow
from controller.errors import Invalid, TooMany, Unauthorized

__all__ = [
    "LoginThrottle",
    "authenticate",
    "check_password",
    "ensure_admin",
    "hash_password",
    "issue_tokens",
    "refresh",
    "revoke_token",
    "revoke_tokens",
    "user_for_token",
    "verify_password",
]

_N, _R, _P = 2**14, 8, 1
PASSWORD_MIN = 10
LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)
THROTTLE_FAILURES = 20
THROTTLE_WINDOW = 15 * 60.0
#: what people choose first (and what guides and compose files ship with)
COMMON = frozenset({
    "password", "password1", "password123", "123456789", "1234567890", "12345678910",
    "qwertyuiop", "1q2w3e4r5t", "iloveyou", "change-me", "changeme", "admin12345",
    "administrator", "matkhau123", "matkhau", "123456aa", "abc123456", "letmein123",
    "welcome123", "loa-admin", "adminadmin", "passw0rd", "p@ssw0rd", "p@ssword"})


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


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def check_password(password: str, username: str) -> None:
    """422 ``password_weak`` with the reason, for a password that should not be used."""
    reason = None
    if len(password) < PASSWORD_MIN:
        reason = f"shorter than {PASSWORD_MIN} characters"
    elif password.lower() in COMMON or password.lower().strip("0123456789!") in COMMON:
        reason = "one of the most common passwords"
    elif username.lower() in password.lower():
        reason = "it contains the account's name"
    elif len(set(password)) < 4:
        reason = "too few different characters"
    if reason:
        raise Invalid("password_weak", f"choose another password: {reason}", reason=reason,
                      min_length=PASSWORD_MIN)


class LoginThrottle:
    """Failed logins per client address, in memory (one controller process)."""

    def __init__(self, failures: int = THROTTLE_FAILURES, window_s: float = THROTTLE_WINDOW):
        self.failures, self.window_s = failures, window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, t: float) -> deque[float]:
        seen = self._seen.setdefault(client, deque())
        while seen and t - seen[0] > self.window_s:
            seen.popleft()
        return seen

    def check(self, client: str) -> None:
        t = time.monotonic()
        with self._lock:
            seen = self._recent(client, t)
            if len(seen) >= self.failures:
                wait = int(self.window_s - (t - seen[0])) + 1
                raise TooMany("login_throttled", f"too many failed logins from {client}; "
                              f"try again in {wait} s", retry_after_s=wait)

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())
            if len(self._seen) > 100_000:  # (an address flood: forget the oldest)
                self._seen.pop(next(iter(self._seen)))


def authenticate(db: Session, username: str, password: str, client: str,
                 throttle: LoginThrottle) -> User:
    """The user, or a coded refusal: 429 while the address or the account is held back,
    401 otherwise, the same for an unknown name and a wrong password."""
    throttle.check(client)
    now = utcnow()
    user = db.get(User, username)
    if user is not None and user.locked_until is not None and user.locked_until > now:
        wait = int((user.locked_until - now).total_seconds()) + 1
        raise TooMany("login_locked", f"the account is locked after {LOCK_AFTER} wrong "
                      f"passwords; try again in {wait} s or ask an admin",
                      retry_after_s=wait)
    ok = verify_password(password, user.password_hash if user is not None else _dummy_hash())
    if user is None or not ok or user.disabled:
        throttle.failed(client)
        if user is not None and not ok:
            user.failed_logins = (user.failed_logins or 0) + 1
            if user.failed_logins >= LOCK_AFTER:
                user.locked_until, user.failed_logins = now + LOCK_FOR, 0
            db.commit()
        raise Unauthorized("wrong_credentials", "Wrong username or password")
    if user.failed_logins or user.locked_until:
        user.failed_logins, user.locked_until = 0, None
        db.commit()
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_tokens(db: Session, username: str, ttl_s: int, refresh_ttl_s: int) -> tuple[str, str]:
    """A new (access, refresh) pair."""
    access, again = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    db.execute(delete(ApiToken).where(ApiToken.expires_at < now))
    db.add_all([ApiToken(token_sha256=_digest(access), username=username, kind="access",
                         expires_at=now + timedelta(seconds=ttl_s)),
                ApiToken(token_sha256=_digest(again), username=username, kind="refresh",
                         expires_at=now + timedelta(seconds=refresh_ttl_s))])
    db.commit()
    return access, again


def refresh(db: Session, refresh_token: str, ttl_s: int, refresh_ttl_s: int
            ) -> tuple[User, str, str]:
    """Trade a refresh token (once) for a new pair."""
    row = db.get(ApiToken, _digest(refresh_token))
    user = db.get(User, row.username) if row is not None else None
    if row is None or row.kind != "refresh" or row.expires_at < utcnow() or user is None \
            or user.disabled:
        raise Unauthorized("token_invalid", "Invalid or expired refresh token")
    db.delete(row)
    db.flush()
    access, again = issue_tokens(db, user.username, ttl_s, refresh_ttl_s)
    return user, access, again


def user_for_token(db: Session, token: str) -> User | None:
    row = db.get(ApiToken, _digest(token))
    if row is None or row.kind != "access" or row.expires_at < utcnow():
        return None
    user = db.get(User, row.username)
    return None if user is None or user.disabled else user


def revoke_token(db: Session, token: str) -> None:
    db.execute(delete(ApiToken).where(ApiToken.token_sha256 == _digest(token)))


def revoke_tokens(db: Session, username: str) -> None:
    """Every token of the account (its sessions everywhere end)."""
    db.execute(delete(ApiToken).where(ApiToken.username == username))


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
