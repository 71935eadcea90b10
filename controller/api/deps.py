from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from controller.access.security import user_for_token
from controller.db.models import User
from controller.errors import Unauthorized
from controller.runtime import Runtime

__all__ = ["CurrentUser", "RuntimeDep", "SessionDep"]

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_runtime(request: Request) -> Runtime:
    # async: no I/O here, so FastAPI need not hop to its thread pool for it on every request
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_db(rt: RuntimeDep) -> Iterator[Session]:
    with rt.sessions() as db:
        yield db


SessionDep = Annotated[Session, Depends(get_db)]


def current_user(request: Request, db: SessionDep,
                 token: Annotated[str | None, Depends(oauth2)]) -> User:
    if not token:
        raise Unauthorized("not_authenticated", "Not authenticated: send a bearer "
                           "token from POST /api/v1/auth/token")
    user = user_for_token(db, token)
    if user is None:
        raise Unauthorized("token_invalid", "Invalid or expired token")
    # who acts, for the audit log (controller.app's middleware writes the entry)
    request.state.actor = (user.username, user.role, user.area_id)
    return user


CurrentUser = Annotated[User, Depends(current_user)]
