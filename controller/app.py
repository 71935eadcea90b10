"""FastAPI application factory: ``create_app(settings)``; parts start in the lifespan."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.routing import NoMatchFound

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
    health,
    inbox,
    policy,
    users,
)
from controller.metrics import render
from controller.runtime import Runtime
from controller.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # blocking start/stop run in a thread: an embedded broker may share this event loop
        rt = runtime if runtime is not None else await asyncio.to_thread(Runtime.build, settings)
        app.state.runtime = rt
        await asyncio.to_thread(rt.start)
        await asyncio.to_thread(_build_routes, app)
        try:
            yield
        finally:
            await asyncio.to_thread(rt.stop)

    app = FastAPI(title="Loa controller", version="0.1.0", lifespan=lifespan,
                  description="Schedules announcements to a commune's smart loudspeaker "
                              "clusters and tracks their health.")
    errors.install(app)
    api = APIRouter(prefix="/api/v1")
    for r in (auth.router, areas.router, contents.router, broadcasts.router, health.router,
              actions.router, alerts.router, policy.router, users.router, cap.router,
              inbox.router):
        api.include_router(r)
    app.include_router(api)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        rt: Runtime = request.app.state.runtime
        if not rt.settings.metrics_public:  # a bearer token, as for the API
            auth_header = request.headers.get("authorization", "")
            token = auth_header[7:] if auth_header.lower().startswith("bearer ") else None
            with rt.sessions() as db:
                current_user(db, token)
        return Response(render(rt), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def console() -> str:
        return resources.files("controller.web").joinpath("index.html").read_text("utf-8")

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
