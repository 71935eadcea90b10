from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from controller.access.jurisdiction import describe, require_role, scope
from controller.access.security import hash_password
from controller.api.deps import CurrentUser, SessionDep
from controller.db.models import Area, User
from controller.errors import Conflict, Forbidden, Invalid

router = APIRouter(prefix="/users", tags=["users"])


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=r"^[a-z0-9._-]{3,64}$")
    password: str = Field(min_length=8, max_length=200)
    role: Literal["admin", "leader", "officer", "technician"]
    area_id: str | None = Field(None, description="the area the account acts for; "
                                                  "null = national (admins only)")


def _out(db: SessionDep, u: User) -> dict[str, Any]:
    return {"username": u.username, "role": u.role, "area_id": u.area_id,
            "area": describe(db, u.area_id)}


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
    u = User(username=req.username, password_hash=hash_password(req.password), role=req.role,
             area_id=req.area_id)
    db.add(u)
    db.commit()
    return _out(db, u)
