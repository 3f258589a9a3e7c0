"""The FastAPI application of the hub."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge import __version__
from edge.config import Settings
from hub.state import HubState


def create_app(settings: Settings) -> FastAPI:
    state = HubState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.start)
        yield
        await run_in_threadpool(state.stop)

    app = FastAPI(
        title="facematch",
        version=__version__,
        description="Face matching with eye-tracking liveness and passive anti-spoofing.",
        lifespan=lifespan,
    )
    app.state.hub = state

    @app.get("/health", tags=["status"], summary="Readiness of the hub and of everything it depends on")
    async def health() -> JSONResponse:
        redis_ok = await run_in_threadpool(state.store.ping)
        broker_ok = state.bus.connected
        dependencies: dict[str, Any] = {
            "redis": {"ok": redis_ok, "url": settings.redis.url},
            "broker": {"ok": broker_ok, "url": settings.mqtt.url},
        }
        healthy = all(dep["ok"] for dep in dependencies.values())
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "timestamp": time.time(),
            "models": {},
            "dependencies": dependencies,
            "version": __version__,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    return app
