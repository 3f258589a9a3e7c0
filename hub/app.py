"""The FastAPI application of the hub."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge import __version__
from edge.bus import BusError
from edge.config import Settings
from hub.errors import ApiError, install_error_handlers
from hub.images import ImageLoader
from hub.limits import BodyLimitMiddleware
from hub.schemas import ERROR_RESPONSES, MatchRequest, MatchResponse
from hub.state import HubState

# JSON overhead around two base64 images (base64 is 4/3 of the bytes).
JSON_SLACK = 64 * 1024


def create_app(settings: Settings) -> FastAPI:
    state = HubState(settings)
    images = ImageLoader(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.start)
        yield
        await images.close()
        await run_in_threadpool(state.stop)

    app = FastAPI(
        title="facematch",
        version=__version__,
        description="Face matching with eye-tracking liveness and passive anti-spoofing.",
        lifespan=lifespan,
    )
    app.state.hub = state
    install_error_handlers(app)
    match_limit = 2 * (settings.http.max_image_size * 4 // 3) + JSON_SLACK
    app.add_middleware(BodyLimitMiddleware, limit_for=lambda path: match_limit)

    def require_inference() -> None:
        if not state.bus.connected:
            raise ApiError(503, "broker_unavailable", f"MQTT broker {settings.mqtt.url} is not connected",
                           dependency="broker")  # fmt: skip
        if not state.component_online("inference"):
            raise ApiError(503, "inference_unavailable", "the inference daemon is not running", dependency="inference")

    @app.get("/health", tags=["status"], summary="Readiness of the hub and of everything it depends on")
    async def health() -> JSONResponse:
        redis_ok = await run_in_threadpool(state.store.ping)
        broker_ok = state.bus.connected
        inference: dict[str, Any] = {"ok": False}
        models: dict[str, bool] = {}
        if broker_ok and state.component_online("inference"):
            try:
                info = await state.bus.acall("health", {}, timeout=3.0)
                inference = {"ok": True, "version": info.get("version")}
                models = {name: True for name in info.get("models", {}).values()}
            except BusError as exc:
                inference = {"ok": False, "error": str(exc)}
        dependencies = {
            "redis": {"ok": redis_ok, "url": settings.redis.url},
            "broker": {"ok": broker_ok, "url": settings.mqtt.url},
            "inference": inference,
        }
        healthy = all(dep["ok"] for dep in dependencies.values())
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "timestamp": time.time(),
            "models": models,
            "dependencies": dependencies,
            "version": __version__,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.post(
        "/match",
        tags=["matching"],
        summary="Compare the faces of two images",
        response_model=MatchResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
    )
    async def match(request: MatchRequest) -> dict[str, Any]:
        started = time.perf_counter()
        require_inference()
        first, second = await asyncio.gather(
            images.load("image1", request.image1), images.load("image2", request.image2)
        )
        payload = {
            "image1": base64.b64encode(first).decode(),
            "image2": base64.b64encode(second).decode(),
            "threshold": request.threshold if request.threshold is not None else settings.matching.similarity_threshold,
            "verbose": request.verbose,
        }
        result = await state.bus.acall("match", payload, timeout=settings.http.request_timeout)
        return {"success": True, **result, "processing_time": round(time.perf_counter() - started, 4)}

    return app
