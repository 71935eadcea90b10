"""The embedded broker (amqtt) checking the same credentials as Mosquitto, through amqtt's
plugin interface, from the files the controller writes from its registry
(:mod:`controller.access.broker_auth`), read again whenever they change.

* :class:`RegistryAuthPlugin`: a client connects only with a username in ``passwd`` and the
  password whose ``$7$`` PBKDF2-SHA512 hash is there. The embedded broker uses it.

The ACL is not enforced here: with any topic-filtering plugin, amqtt 0.12.1 checks each
delivery inside its loop over the subscription table, across an ``await``, and a client
subscribing meanwhile ends that loop ("dictionary changed size during iteration"), after
which the broker delivers nothing. ``loa demo`` therefore runs a private Mosquitto, which
enforces both, wherever Mosquitto is installed, and this broker only where it is not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin

__all__ = ["RegistryAuthPlugin", "verify_mosquitto_hash"]


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


class _Files:
    """``passwd`` in one folder, parsed again when it changes."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self._stamp: float | None = None
        self.passwords: dict[str, str] = {}

    def load(self) -> None:
        try:
            stamp = os.stat(self.folder / "passwd").st_mtime
        except OSError:
            self.passwords, self._stamp = {}, None
            return
        if stamp == self._stamp:
            return
        passwords: dict[str, str] = {}
        for line in (self.folder / "passwd").read_text().splitlines():
            name, _, hashed = line.partition(":")
            if name and hashed:
                passwords[name] = hashed
        self.passwords, self._stamp = passwords, stamp


_files: dict[str, _Files] = {}


def _for(folder: str) -> _Files:
    files = _files.setdefault(folder, _Files(folder))
    files.load()
    return files


class RegistryAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        #: the folder of the controller's ``passwd`` and ``acl``
        files_dir: str = field(default="")

    async def authenticate(self, *, session: Any) -> bool:
        files = _for(str(self._get_config_option("files-dir", "")))
        user, password = getattr(session, "username", None), getattr(session, "password", None)
        if not user or not password:
            return False
        hashed = files.passwords.get(user)
        return hashed is not None and verify_mosquitto_hash(str(password), hashed)
