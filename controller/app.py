"""FastAPI application factory: ``create_app(settings)``; parts start in the lifespan."""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.routing import NoMatchFound

from controller.access import audit
from controller.api import errors
from controller.api.deps import current_user
from controller.api.routes import (
    actions,
    alerts,
    areas,
    auth,
    broadcasts,
    cap,
    contents,
    events,
    health,
    inbox,
    live,
    network,
    policy,
    provisioning,
    users,
)
from controller.api.routes import (
    audit as audit_routes,
)
from controller.db.lock import DatabaseLock
from controller.db.models import utcnow
from controller.metrics import render
from controller.runtime import Runtime
from controller.settings import Settings
from controller.storage import StorageProblem, classify, is_storage_error

log = logging.getLogger(__name__)

__all__ = ["create_app"]

#: while the storage refuses the controller's start, it tries again this often
RETRY_START_S = 5.0
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: recorded by their routes (a login names who tried), or not a change (a renewal)
UNAUDITED = frozenset({"/api/v1/auth/token", "/api/v1/auth/refresh",
                       "/api/v1/broadcasts/preview"})


def startup_storage_problem(exc: BaseException) -> StorageProblem | None:
    """A start that failed on its storage (a database error, or the data folder refusing
    a file: full, read-only, not ours), as a coded problem; None for any other failure."""
    if is_storage_error(exc):
        return StorageProblem(classify(exc), utcnow(), str(exc).splitlines()[0][:300])
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES,
                                                  errno.EPERM, errno.EDQUOT):
        reason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "read_only"
        return StorageProblem(reason, utcnow(), str(exc)[:300])
    cause = exc.__cause__ or exc.__context__
    return startup_storage_problem(cause) if cause is not None else None


def create_app(settings: Settings | None = None, runtime: Runtime | None = None,
               lock: DatabaseLock | None = None) -> FastAPI:
    """``lock``: the database's lock, already held (``loa serve --standby`` waited for it)."""
    settings = settings or Settings()

    async def start(app: FastAPI) -> Runtime:
        # blocking start/stop run in a thread: an embedded broker may share this event loop
        rt = runtime if runtime is not None else await asyncio.to_thread(
            Runtime.build, settings, lock=lock)
        try:
            await asyncio.to_thread(rt.start)
        except BaseException:
            await asyncio.to_thread(rt.stop)
            raise
        app.state.runtime = rt
        app.state.degraded = None
        await asyncio.to_thread(_build_routes, app)
        return rt

    async def start_when_storage_returns(app: FastAPI) -> None:
        while True:
            await asyncio.sleep(RETRY_START_S)
            try:
                await start(app)
                log.warning("storage is back: the controller runs")
                return
            except Exception as exc:
                if not startup_storage_problem(exc):
                    raise
                app.state.degraded = startup_storage_problem(exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = None
        retry: asyncio.Task[None] | None = None
        try:
            await start(app)
        except Exception as exc:
            problem = startup_storage_problem(exc)
            if problem is None:
                raise
            # degraded: the API says why (503 storage_unavailable) instead of a traceback,
            # and the controller starts for real once the storage takes writes
            log.error("controller degraded at start: %s; retrying every %.0f s",
                      problem.body()["message"], RETRY_START_S)
            app.state.degraded = problem
            retry = asyncio.create_task(start_when_storage_returns(app))
        try:
            yield
        finally:
            if retry is not None:
                retry.cancel()
            rt = app.state.runtime
            if rt is not None:
                await asyncio.to_thread(rt.stop)

    app = FastAPI(title="Loa controller", version="0.1.0", lifespan=lifespan,
                  description="Schedules announcements to a commune's smart loudspeaker "
                              "clusters and tracks their health.")

    @app.middleware("http")
    async def degraded_mode(request: Request, call_next: Any) -> Response:
        problem = getattr(request.app.state, "degraded", None)
        if problem is not None and request.url.path.startswith(("/api/", "/metrics")):
            return JSONResponse(problem.body(), status_code=503, headers={"Retry-After": "5"})
        response: Response = await call_next(request)
        return response

    @app.middleware("http")
    async def audit_trail(request: Request, call_next: Any) -> Response:
        """Every change attempted through the API, with who, from where and its outcome
        (controller.access.audit); written after the answer is sent."""
        response: Response = await call_next(request)
        rt = getattr(request.app.state, "runtime", None)
        path = request.url.path
        if rt is None or request.method not in MUTATING or not path.startswith("/api/v1/") \
                or path in UNAUDITED:
            return response
        route = request.scope.get("route")
        template = getattr(route, "path", None) or path
        if not template.startswith("/api/"):  # (a route of the /api/v1 router)
            template = "/api/v1" + template
        params = {k: str(v)[:100] for k, v in request.path_params.items()}
        who = getattr(request.state, "actor", None)  # (set when the token was checked)
        client = request.client.host if request.client else None
        status = response.status_code

        def write() -> None:
            audit.record(rt.sessions, action=f"{request.method} {template}",
                         username=who[0] if who else None, role=who[1] if who else None,
                         area_id=who[2] if who else None, client=client,
                         target=next(iter(params.values()), None), status=status,
                         detail={"path": params} if params else None)

        earlier = response.background
        async def both() -> None:
            if earlier is not None:
                await earlier()
            await asyncio.to_thread(write)
        response.background = BackgroundTask(both)
        return response

    # responses over 1 KB compressed for a phone on 4G (the console's modules, lists);
    # Starlette leaves the events stream (text/event-stream) uncompressed, as it must be
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    errors.install(app)
    api = APIRouter(prefix="/api/v1")
    for r in (auth.router, areas.router, contents.router, broadcasts.router, health.router,
              actions.router, alerts.router, policy.router, users.router, cap.router,
              inbox.router, provisioning.router, audit_routes.router, network.router,
              events.router, live.router):
        api.include_router(r)
    app.include_router(api)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        rt: Runtime = request.app.state.runtime
        if not rt.settings.metrics_public:  # a bearer token, as for the API
            auth_header = request.headers.get("authorization", "")
            token = auth_header[7:] if auth_header.lower().startswith("bearer ") else None
            with rt.sessions() as db:
                current_user(request, db, token)
        return Response(render(rt), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", include_in_schema=False)
    def healthz(request: Request) -> JSONResponse:
        """The operator's probe: 200 when the controller runs with its storage and its
        broker link, 503 (with the coded reason) when it is degraded."""
        problem = request.app.state.degraded
        rt: Runtime | None = request.app.state.runtime
        if problem is None and rt is not None:
            problem = rt.storage.problem
        mqtt = rt is not None and rt.link.connected.is_set()
        body: dict[str, Any] = {
            "status": "ok" if problem is None and mqtt else "degraded",
            "storage": None if problem is None else problem.body(),
            "mqtt": "connected" if mqtt else "disconnected",
            "unrecorded": len(rt.dispatcher.unrecorded) if rt is not None else 0}
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def console() -> str:
        return resources.files("controller.web").joinpath("index.html").read_text("utf-8")

    # the console's modules, styles and vendored libraries (controller/web)
    app.mount("/console", StaticFiles(directory=str(resources.files("controller.web"))),
              name="console")

    return app


def _build_routes(app: FastAPI) -> None:
    """FastAPI builds each route's handler (its dependency tree) on the first request that
    reaches it, and on that request also reads the endpoint's source file (for error
    messages): together ~25 ms, which the first emergency after a start would pay before
    its command is signed. Walking every route once, for a name no route has, builds them
    all now, and reading each endpoint's source here puts those files in ``linecache``."""
    try:
        app.url_path_for("loa-build-every-route")
    except NoMatchFound:
        pass

    def walk(routes: Iterable[object]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                try:
                    inspect.getsourcelines(route.endpoint)
                except (OSError, TypeError):
                    pass
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes)

    walk(app.routes)
