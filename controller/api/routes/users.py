from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from controller.access.jurisdiction import describe, require_role, scope
from controller.access.security import (
    check_password,
    hash_password,
    revoke_tokens,
    verify_password,
)
from controller.api.deps import CurrentUser, SessionDep
from controller.db.models import Area, User, utcnow
from controller.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized

router = APIRouter(prefix="/users", tags=["users"])


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=r"^[a-z0-9._-]{3,64}$")
    password: str = Field(max_length=200, description="at least 10 characters, not a common "
                                                      "one, not the account's name")
    role: Literal["admin", "leader", "officer", "technician"]
    area_id: str | None = Field(None, description="the area the account acts for; "
                                                  "null = national (admins only)")


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "leader", "officer", "technician"] | None = None
    area_id: str | None = None
    disabled: bool | None = Field(None, description="a disabled account can neither log in "
                                                    "nor use the tokens it holds")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current: str = Field(max_length=200)
    new: str = Field(max_length=200)


class PasswordSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(max_length=200)


def _out(db: SessionDep, u: User) -> dict[str, Any]:
    return {"username": u.username, "role": u.role, "area_id": u.area_id,
            "area": describe(db, u.area_id), "disabled": bool(u.disabled),
            "locked_until": u.locked_until.isoformat() if u.locked_until else None}


def _managed(db: SessionDep, user: User, username: str) -> User:
    """An account ``user`` (an admin) may manage: within its area; 404 otherwise."""
    require_role(user, ("admin",), "manage accounts")
    target = db.get(User, username)
    allowed = scope(db, user)
    if target is None or (allowed is not None and target.area_id not in allowed):
        raise NotFound("user_not_found", f"no account {username!r} in your area",
                       username=username)
    return target


@router.get("")
def list_users(db: SessionDep, user: CurrentUser) -> list[dict[str, Any]]:
    """The accounts of one's area (admins)."""
    require_role(user, ("admin",), "list accounts")
    allowed = scope(db, user)
    rows = db.query(User).order_by(User.username).all()
    return [_out(db, u) for u in rows if allowed is None or u.area_id in allowed]


@router.patch("/{username}")
def update_user(username: str, req: UserPatch, db: SessionDep,
                user: CurrentUser) -> dict[str, Any]:
    """Change an account's role or area, or disable it (its sessions end at once)."""
    target = _managed(db, user, username)
    if target.username == user.username and (req.disabled or req.role not in (None, "admin")):
        raise Conflict("user_self", "an admin cannot disable or demote itself",
                       username=username)
    if req.area_id is not None:
        allowed = scope(db, user)
        if db.get(Area, req.area_id) is None:
            raise Invalid("area_unknown", f"unknown area {req.area_id!r}", area=req.area_id)
        if allowed is not None and req.area_id not in allowed:
            raise Forbidden("account_outside_jurisdiction", f"{user.username} can only move "
                            f"accounts within {describe(db, user.area_id)}",
                            user=user.username, home=user.area_id, area=req.area_id)
        target.area_id = req.area_id
    if req.role is not None:
        target.role = req.role
    if req.disabled is not None:
        target.disabled = req.disabled
        if req.disabled:
            revoke_tokens(db, target.username)
        else:
            target.failed_logins, target.locked_until = 0, None
    db.commit()
    return _out(db, target)


@router.delete("/{username}", status_code=204)
def delete_user(username: str, db: SessionDep, user: CurrentUser) -> Response:
    """Delete an account; its sessions end. (Its past actions stay in the audit log.)"""
    target = _managed(db, user, username)
    if target.username == user.username:
        raise Conflict("user_self", "an admin cannot delete itself", username=username)
    revoke_tokens(db, target.username)
    db.delete(target)
    db.commit()
    return Response(status_code=204)


@router.post("/me/password", status_code=204)
def change_password(req: PasswordChange, db: SessionDep, user: CurrentUser) -> Response:
    """Change one's own password; every session of the account ends (log in again)."""
    if not verify_password(req.current, user.password_hash):
        raise Unauthorized("wrong_credentials", "the current password is wrong")
    check_password(req.new, user.username)
    user.password_hash, user.password_changed_at = hash_password(req.new), utcnow()
    revoke_tokens(db, user.username)
    db.commit()
    return Response(status_code=204)


@router.put("/{username}/password", status_code=204)
def set_password(username: str, req: PasswordSet, db: SessionDep,
                 user: CurrentUser) -> Response:
    """An admin sets an account's password (a forgotten one); its sessions end and its
    lock is lifted."""
    target = _managed(db, user, username)
    check_password(req.password, target.username)
    target.password_hash, target.password_changed_at = hash_password(req.password), utcnow()
    target.failed_logins, target.locked_until = 0, None
    revoke_tokens(db, target.username)
    db.commit()
    return Response(status_code=204)


@router.get("/me")
def me(db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return _out(db, user)


@router.post("", status_code=201)
def create_user(req: UserCreate, db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    require_role(user, ("admin",), "create accounts")
    allowed = scope(db, user)
    if req.area_id is not None and db.get(Area, req.area_id) is None:
        raise Invalid("area_unknown", f"unknown area {req.area_id!r}", area=req.area_id)
    if allowed is not None and (req.area_id is None or req.area_id not in allowed):
        raise Forbidden("account_outside_jurisdiction",
                        f"{user.username} can only create accounts within "
                        f"{describe(db, user.area_id)}", user=user.username,
                        home=user.area_id, area=req.area_id)
    if db.get(User, req.username) is not None:
        raise Conflict("user_exists", f"user {req.username!r} exists", username=req.username)
    check_password(req.password, req.username)
    u = User(username=req.username, password_hash=hash_password(req.password), role=req.role,
             area_id=req.area_id)
    db.add(u)
    db.commit()
    return _out(db, u)
