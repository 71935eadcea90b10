"""One place that turns refusals into HTTP responses, all of the same shape::

    {"code": str, "params": {...}, "message": str, ["problems": [...]]}

Domain errors (:mod:`controller.errors`) carry their own code; a request that fails
validation is ``invalid_request`` with each field's problem; the framework's own errors
(an unknown path, a wrong method) are ``http_<status>``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.db.models import utcnow
from controller.errors import LoaError, Unauthorized
from controller.storage import StorageMonitor, StorageProblem, classify, is_storage_error

__all__ = ["install"]


def _loa_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LoaError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems: list[dict[str, Any]] = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
        ctx = {k: v for k, v in (e.get("ctx") or {}).items()
               if isinstance(v, (str, int, float, bool))}
        problems.append({"code": f"field_{e.get('type', 'invalid')}",
                         "params": {"field": ".".join(loc), **ctx},
                         "message": f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}"})
    first = problems[0]["message"] if problems else "invalid request"
    return JSONResponse({"code": "invalid_request", "params": {"count": len(problems)},
                         "message": first, "problems": problems}, status_code=422)


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"code": f"http_{exc.status_code}", "params": {},
                         "message": str(exc.detail)}, status_code=exc.status_code,
                        headers=exc.headers)


def _storage(request: Request, exc: Exception) -> JSONResponse:
    """The database refused the request's reads or writes: 503 ``storage_unavailable`` with
    the reason (disk_full, read_only, unreachable, busy); the storage alert opens."""
    if not is_storage_error(exc):
        raise exc
    rt = getattr(request.app.state, "runtime", None)
    monitor: StorageMonitor | None = getattr(rt, "storage", None)
    problem = monitor.failed(exc) if monitor is not None else None
    if problem is None:
        problem = StorageProblem(classify(exc), utcnow(), str(exc)[:300])
    return JSONResponse(problem.body(), status_code=503, headers={"Retry-After": "5"})


def _pool_busy(_request: Request, exc: Exception) -> JSONResponse:
    """Every database connection stayed in use for the pool's whole wait: the controller is
    saturated, the database is fine. 503 ``storage_unavailable`` (busy), no storage alert."""
    problem = StorageProblem("busy", utcnow(), str(exc).splitlines()[0][:300])
    return JSONResponse(problem.body(), status_code=503, headers={"Retry-After": "5"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(DBAPIError, _storage)
    app.add_exception_handler(PoolTimeout, _pool_busy)
    app.add_exception_handler(LoaError, _loa_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
