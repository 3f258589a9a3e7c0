"""The FastAPI application of the hub: routers, middleware, error handlers, and API docs served from the device."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from edge import __version__
from edge.config import Settings
from hub.errors import install_error_handlers
from hub.gallery_schemas import MAX_PHOTOS
from hub.limits import BodyGuard
from hub.routers import gallery, liveness, match, page, status
from hub.routers.page import STATIC_DIR
from hub.state import HubState

# JSON overhead around two base64 images (base64 is 4/3 of the bytes); multipart overhead around a video.
JSON_SLACK = 64 * 1024


def create_app(settings: Settings) -> FastAPI:
    state = HubState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.start)
        yield
        await state.aclose()

    # FastAPIOffline serves the Swagger UI and ReDoc assets itself: /docs works on a device without internet.
    app = FastAPIOffline(
        title="facematch",
        version=__version__,
        description=(
            "Face matching with eye-tracking liveness. Every endpoint but `/health`, the web page and these docs needs "
            "an API key in the `X-API-Key` header (the liveness endpoints also take a kiosk page token in "
            '`X-Page-Token`). Errors are `{"success": false, "error": {"code", "message", ...}}`; every code is '
            "listed in docs/ERRORS.md."
        ),
        lifespan=lifespan,
    )
    app.state.hub = state
    install_error_handlers(app)
    match_limit = 2 * (settings.http.max_image_size * 4 // 3) + JSON_SLACK
    video_limit = settings.http.max_video_size + JSON_SLACK

    photos_limit = MAX_PHOTOS * (settings.http.max_image_size * 4 // 3) + JSON_SLACK

    def body_limit(path: str) -> int:
        if path.startswith("/submit-liveness"):  # the whole video, or one chunk of a streamed one
            return video_limit
        if path == "/gallery/import":
            return settings.http.max_archive_size
        if path.startswith("/subjects"):
            return photos_limit
        return match_limit

    app.add_middleware(
        BodyGuard, limit_for=body_limit, body_timeout=settings.http.body_timeout,
        per_address=settings.http.max_requests_per_address,
    )  # fmt: skip
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["X-API-Key", "X-Page-Token", "Content-Type"],
        )  # fmt: skip
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in (page.router, status.router, match.router, liveness.router, gallery.router):
        app.include_router(router)
    return app
