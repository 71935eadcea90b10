"""Refusals a person may see, each with a stable code and parameters.

Services raise these; nothing below ``controller.api`` knows HTTP. One exception handler
(:mod:`controller.api.errors`) turns them into a response body::

    {"code": "quiet_hours", "params": {...}, "message": "...", "problems": [...]}

``code`` and ``params`` are the contract: the console and API users translate from them
(``docs/errors.md`` lists every code). ``message`` is English, for logs and API users;
it may change wording at any time. ``problems`` lists the individual reasons when one
refusal has several (each a :class:`Problem` with its own code and params).

Hierarchy (the HTTP status each maps to)::

    LoaError
     ├── Invalid        422  the request cannot be carried out as given
     ├── NotFound       404  no such thing in the caller's area
     ├── Forbidden      403  the caller's role or area does not allow it
     ├── Conflict       409  the thing's state does not allow it now
     ├── Unauthorized   401  no valid credentials
     ├── TooLarge       413  the upload is over a limit
     ├── TooMany        429  too many attempts: wait (``retry_after_s``)
     └── Unavailable    503  a part the request needs is down
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["Conflict", "Forbidden", "Invalid", "LoaError", "NotFound", "Problem", "TooLarge",
           "TooMany", "Unauthorized", "Unavailable"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One coded reason."""

    code: str
    message: str
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "params": self.params, "message": self.message}


class LoaError(Exception):
    status: ClassVar[int] = 422

    def __init__(self, code: str, message: str, /, *, problems: list[Problem] | None = None,
                 **params: Any):
        super().__init__(message)
        self.code, self.message, self.params = code, message, params
        self.problems = problems or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "params": self.params,
                               "message": self.message}
        if self.problems:
            out["problems"] = [p.as_dict() for p in self.problems]
        return out


class Invalid(LoaError):
    status = 422


class NotFound(LoaError):
    status = 404


class Forbidden(LoaError):
    status = 403


class Conflict(LoaError):
    status = 409


class Unauthorized(LoaError):
    status = 401


class TooLarge(LoaError):
    status = 413


class TooMany(LoaError):
    status = 429


class Unavailable(LoaError):
    status = 503
