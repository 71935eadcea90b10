"""Log in (access and refresh tokens), renew, log out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from controller.access import audit
from controller.access.security import (
    authenticate,
    issue_tokens,
    refresh,
    revoke_token,
    revoke_tokens,
)
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep, oauth2
from controller.api.schemas import LogoutRequest, RefreshRequest, Token
from controller.db.models import User
from controller.errors import LoaError
from controller.runtime import Runtime

router = APIRouter(prefix="/auth", tags=["auth"])


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _pair(rt: Runtime, access: str, again: str) -> Token:
    s = rt.settings
    return Token(access_token=access, expires_in=s.token_ttl_s, refresh_token=again,
                 refresh_expires_in=s.refresh_ttl_s)


@router.post("/token", response_model=Token)
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request,
          db: SessionDep, rt: RuntimeDep) -> Token:
    """Log in. Five wrong passwords in a row lock the account for 15 minutes (429
    ``login_locked``); an address with 20 failures in 15 minutes is held back (429
    ``login_throttled``). Every attempt is in the audit log."""
    client = _client(request)
    try:
        user = authenticate(db, form.username, form.password, client, rt.logins)
    except LoaError as exc:
        db.rollback()
        known = db.get(User, form.username)  # (its area: whose log shows the attempt)
        audit.record(rt.sessions, action="login_failed", username=form.username[:64],
                     role=known.role if known else None,
                     area_id=known.area_id if known else None, client=client,
                     status=exc.status, detail={"code": exc.code})
        raise
    access, again = issue_tokens(db, user.username, rt.settings.token_ttl_s,
                                 rt.settings.refresh_ttl_s)
    audit.record(rt.sessions, action="login", username=user.username, role=user.role,
                 area_id=user.area_id, client=client, status=200)
    return _pair(rt, access, again)


@router.post("/refresh", response_model=Token)
def renew(req: RefreshRequest, request: Request, db: SessionDep, rt: RuntimeDep) -> Token:
    """A new access and refresh token for a refresh token, which is then spent."""
    _user, access, again = refresh(db, req.refresh_token, rt.settings.token_ttl_s,
                                   rt.settings.refresh_ttl_s)
    return _pair(rt, access, again)


@router.post("/logout", status_code=204)
def logout(user: CurrentUser, db: SessionDep, token: Annotated[str | None, Depends(oauth2)],
           req: LogoutRequest | None = None) -> Response:
    """End this session (its access token and, if given, its refresh token), or with
    ``everywhere`` every session of the account."""
    if req is not None and req.everywhere:
        revoke_tokens(db, user.username)
    else:
        if token:
            revoke_token(db, token)
        if req is not None and req.refresh_token:
            revoke_token(db, req.refresh_token)
    db.commit()
    return Response(status_code=204)
