"""Ed25519 command signing and verification (protocol v1).

Canonical form: the command object without its ``sig`` member, serialised as RFC 8785 (JCS)
JSON: keys sorted, no insignificant whitespace, UTF-8, strings escaped minimally. Command
messages contain no floating-point numbers, so JCS reduces to ``json.dumps(obj,
sort_keys=True, separators=(",", ":"), ensure_ascii=False)``. ``sig`` is the base64
(standard alphabet, padded) of the 64-byte Ed25519 signature of those bytes.

``key_id`` is the first 16 hex characters of sha256(raw 32-byte public key).

A cluster accepts a command only when all hold (otherwise it refuses with the reason):
the signature verifies with a provisioned key; ``topic`` equals the topic it arrived on;
``issued_at`` is not more than ``MAX_CLOCK_SKEW`` ahead of its clock; ``expires_at`` is in
the future; the lifetime is at most ``MAX_LIFETIME``; and the ``id`` was not seen before.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import ValidationError

from devices.messages import COMMAND_BODIES, MAX_CONTROL_PAYLOAD, Command, RefusalReason, iso

__all__ = [
    "MAX_CLOCK_SKEW",
    "MAX_LIFETIME",
    "CommandVerifier",
    "Refused",
    "ReplayGuard",
    "canonical",
    "key_id",
    "new_signing_key",
    "sign_command",
]

MAX_CLOCK_SKEW = timedelta(seconds=30)
MAX_LIFETIME = timedelta(days=2)


class Refused(Exception):
    """A command the cluster must not execute."""

    def __init__(self, reason: RefusalReason, detail: str = "", command_id: str | None = None):
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.command_id = command_id


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(verify_key: VerifyKey) -> str:
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


def new_signing_key() -> SigningKey:
    return SigningKey.generate()


def sign_command(
    signing_key: SigningKey,
    *,
    kind: str,
    topic: str,
    body: Mapping[str, Any],
    expires_at: datetime,
    issued_at: datetime | None = None,
    command_id: str | None = None,
) -> bytes:
    """Build, sign and serialise a command; returns the MQTT payload."""
    if kind not in COMMAND_BODIES:
        raise ValueError(f"unknown command kind {kind!r}")
    issued = issued_at or datetime.now(UTC)
    obj: dict[str, Any] = {
        "v": 1,
        "id": command_id or uuid.uuid4().hex,
        "kind": kind,
        "topic": topic,
        "issued_at": iso(issued),
        "expires_at": iso(expires_at),
        "key_id": key_id(signing_key.verify_key),
        "body": dict(body),
    }
    sig = signing_key.sign(canonical(obj)).signature
    obj["sig"] = base64.b64encode(sig).decode()
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class ReplayGuard:
    """Remembers accepted command ids until they expire.

    An id is kept until its command's ``expires_at`` (never longer than MAX_LIFETIME), so a
    captured command can never be replayed while it is still valid, and after that it is
    refused as expired. Firmware should persist this across reboots.
    """

    def __init__(self, entries: Iterable[tuple[str, datetime]] = ()):
        self._seen: dict[str, datetime] = dict(entries)

    def seen(self, command_id: str) -> bool:
        return command_id in self._seen

    def remember(self, command_id: str, expires_at: datetime, now: datetime) -> None:
        self._seen[command_id] = expires_at
        if len(self._seen) % 256 == 0:
            self.prune(now)

    def prune(self, now: datetime) -> None:
        for cid in [c for c, exp in self._seen.items() if exp <= now]:
            del self._seen[cid]

    def entries(self) -> list[tuple[str, datetime]]:
        return list(self._seen.items())

    def __len__(self) -> int:
        return len(self._seen)


class CommandVerifier:
    """Verifies incoming command payloads for one cluster.

    ``memo`` (optional) holds the outcome of the checks that depend on the payload's bytes
    alone (JSON, version, key, signature, schema), so that a process simulating many
    clusters checks each distinct payload once, as each real board would for itself. Share
    one memo only among verifiers with the same keys. The topic, kind, clock, replay and
    body checks still run per cluster, in the protocol's order."""

    MEMO_SIZE = 256

    def __init__(self, keys: Iterable[VerifyKey], replay_guard: ReplayGuard | None = None,
                 memo: dict[bytes, Command | Refused] | None = None):
        self._keys = {key_id(k): k for k in keys}
        self.replay_guard = replay_guard or ReplayGuard()
        self._memo = memo

    def _signed(self, payload: bytes) -> Command:
        """The checks on the payload's bytes alone, up to "well-typed" (§5.2's first six
        rows); raises :class:`Refused`."""
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise Refused(RefusalReason.MALFORMED, "payload too large")
        try:
            raw = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise Refused(RefusalReason.MALFORMED, "not JSON") from None
        if not isinstance(raw, dict):
            raise Refused(RefusalReason.MALFORMED, "not a JSON object")
        cid = raw.get("id") if isinstance(raw.get("id"), str) else None
        if raw.get("v") != 1:
            raise Refused(RefusalReason.UNSUPPORTED_VERSION, f"v={raw.get('v')!r}", cid)
        sig = raw.get("sig")
        if not sig or not isinstance(sig, str):
            raise Refused(RefusalReason.UNSIGNED, "no signature", cid)
        kid = raw.get("key_id")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Refused(RefusalReason.UNKNOWN_KEY, f"key_id={raw.get('key_id')!r}", cid)
        unsigned = {k: v for k, v in raw.items() if k != "sig"}
        try:
            key.verify(canonical(unsigned), base64.b64decode(sig, validate=True))
        except (BadSignatureError, ValueError):
            raise Refused(RefusalReason.BAD_SIGNATURE, "signature does not verify", cid) from None
        try:
            return Command.model_validate(raw)
        except ValidationError as exc:
            raise Refused(RefusalReason.MALFORMED, _first_error(exc), cid) from None

    def _signed_memo(self, payload: bytes) -> Command:
        memo = self._memo
        if memo is None:
            return self._signed(payload)
        hit = memo.get(payload)
        if hit is None:
            try:
                hit = self._signed(payload)
            except Refused as exc:
                hit = exc
            if len(memo) >= self.MEMO_SIZE:
                del memo[next(iter(memo))]  # the oldest
            memo[payload] = hit
        if isinstance(hit, Refused):
            raise Refused(hit.reason, hit.detail, hit.command_id)
        return hit

    def verify(self, payload: bytes, topic: str, now: datetime) -> Command:
        """Return the verified command or raise :class:`Refused` (checks in §5.2's order)."""
        cmd = self._signed_memo(payload)
        cid = cmd.id
        if cmd.topic != topic:
            raise Refused(RefusalReason.WRONG_TOPIC, f"signed for {cmd.topic}", cid)
        if cmd.kind not in COMMAND_BODIES:
            raise Refused(RefusalReason.UNKNOWN_KIND, cmd.kind, cid)
        if cmd.issued_at - now > MAX_CLOCK_SKEW:
            raise Refused(RefusalReason.NOT_YET_VALID, f"issued_at {iso(cmd.issued_at)}", cid)
        if cmd.expires_at <= now:
            raise Refused(RefusalReason.EXPIRED, f"expired at {iso(cmd.expires_at)}", cid)
        if cmd.expires_at - cmd.issued_at > MAX_LIFETIME:
            raise Refused(RefusalReason.MALFORMED, "lifetime longer than allowed", cid)
        if self.replay_guard.seen(cmd.id):
            raise Refused(RefusalReason.REPLAYED, "command id already seen", cid)
        try:
            cmd.parsed_body()  # validated once per Command (a memo shares the Command)
        except ValidationError as exc:
            raise Refused(RefusalReason.MALFORMED, _first_error(exc), cid) from None
        self.replay_guard.remember(cmd.id, cmd.expires_at, now)
        return cmd


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"[:200]
