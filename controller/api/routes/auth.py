from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from controller.access.security import issue_token, verify_password
from controller.api.deps import RuntimeDep, SessionDep
from controller.api.schemas import Token
from controller.db.models import User
from controller.errors import Unauthorized

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=Token)
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], db: SessionDep,
          rt: RuntimeDep) -> Token:
    user = db.get(User, form.username)
    if user is None or not verify_password(form.password, user.password_hash):
        raise Unauthorized("wrong_credentials", "Wrong username or password")
    ttl = rt.settings.token_ttl_s
    return Token(access_token=issue_token(db, user.username, ttl), expires_in=ttl)
