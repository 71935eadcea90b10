"""The embedded broker's own check: amqtt lets in only connections that came through the
door (:mod:`controller.transport.broker_gate`), which holds every rule of the controller's
``passwd`` and ``acl``; and the check of Mosquitto's ``$7$`` password hashes the door uses.

* :class:`GateAuthPlugin`: the password amqtt sees must be the door's proof for that
  username (an HMAC under a secret that lives only in the controller's process), so a
  client that finds amqtt's loopback port cannot go round the door.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin

__all__ = ["GateAuthPlugin", "verify_mosquitto_hash"]


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    """Check ``password`` against a Mosquitto 2 ``$7$iterations$salt$hash`` entry."""
    try:
        _empty, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt),
                                  int(iterations))
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


class GateAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        #: the door's secret, hex (see broker_gate.gate_password)
        gate_secret: str = field(default="")

    async def authenticate(self, *, session: Any) -> bool:
        from controller.transport.broker_gate import gate_password

        secret = bytes.fromhex(self.config.gate_secret)
        user, password = getattr(session, "username", None), getattr(session, "password", None)
        if not secret or not user or not password:
            return False
        return hmac.compare_digest(str(password), gate_password(secret, str(user)))
