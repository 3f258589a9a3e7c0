"""The FastAPI application of the hub."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from edge import __version__
from edge.bus import LIVENESS_METHOD, BusError
from edge.config import Settings
from edge.liveness.challenge import Challenge, generate_sequence
from edge.store import SessionConflict, SessionState
from hub.errors import ApiError, install_error_handlers
from hub.images import ImageLoader
from hub.limits import BodyLimitMiddleware
from hub.schemas import (
    ERROR_RESPONSES,
    InitiateLivenessRequest,
    InitiateLivenessResponse,
    MatchRequest,
    MatchResponse,
    SubmitLivenessResponse,
)
from hub.security import ApiKeys, RateLimits
from hub.state import HubState

STATIC_DIR = Path(__file__).resolve().parent / "static"
# JSON overhead around two base64 images (base64 is 4/3 of the bytes); multipart overhead around a video.
JSON_SLACK = 64 * 1024
UPLOAD_CHUNK = 1 << 20
# Scoring a video takes ~1 s; the RPC may wait this much longer than REQUEST_TIMEOUT for it.
LIVENESS_TIMEOUT_FLOOR = 60.0


def authorised(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
    """The caller's key id, after the per-address and per-key rate limits."""
    address = request.client.host if request.client else "unknown"
    limits: RateLimits = request.app.state.limits
    limits.check(None, address)
    key_id = request.app.state.keys.identify(x_api_key)
    limits.check(key_id, address)
    return key_id


Caller = Annotated[str, Depends(authorised)]


def create_app(settings: Settings) -> FastAPI:
    state = HubState(settings)
    images = ImageLoader(settings)
    keys = ApiKeys(settings)
    limits = RateLimits(settings)
    spool = settings.paths.state_dir / "spool"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        spool.mkdir(parents=True, exist_ok=True)
        await run_in_threadpool(state.start)
        yield
        await images.close()
        await run_in_threadpool(state.stop)

    app = FastAPI(
        title="facematch",
        version=__version__,
        description=(
            "Face matching with eye-tracking liveness. Every endpoint but `/health` and the web page needs an API key "
            'in the `X-API-Key` header. Errors are `{"success": false, "error": {"code", "message", ...}}`.'
        ),
        lifespan=lifespan,
    )
    app.state.hub = state
    install_error_handlers(app)
    match_limit = 2 * (settings.http.max_image_size * 4 // 3) + JSON_SLACK
    video_limit = settings.http.max_video_size + JSON_SLACK

    def body_limit(path: str) -> int:
        return video_limit if path == "/submit-liveness" else match_limit

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type"],
        )  # fmt: skip

    app.state.keys = keys
    app.state.limits = limits

    def require_inference() -> None:
        if not state.bus.connected:
            raise ApiError(503, "broker_unavailable", f"MQTT broker {settings.mqtt.url} is not connected",
                           dependency="broker")  # fmt: skip
        if not state.component_online("inference"):
            raise ApiError(503, "inference_unavailable", "the inference daemon is not running", dependency="inference")

    # -- web page ---------------------------------------------------------------------------------------------

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/static", include_in_schema=False)
    async def static_root() -> RedirectResponse:
        return RedirectResponse("/static/index.html")

    # -- status -----------------------------------------------------------------------------------------------

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
            "api_keys_configured": keys.configured,
            "version": __version__,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    # -- matching ---------------------------------------------------------------------------------------------

    @app.post(
        "/match",
        tags=["matching"],
        summary="Compare the faces of two images",
        response_model=MatchResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
    )
    async def match(request: MatchRequest, caller: Caller) -> dict[str, Any]:
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

    # -- liveness ---------------------------------------------------------------------------------------------

    @app.post(
        "/initiate-liveness",
        tags=["liveness"],
        summary="Start an eye-tracking challenge: a random sequence of 3 areas of the 2×3 grid",
        response_model=InitiateLivenessResponse,
        responses=ERROR_RESPONSES,
    )
    async def initiate_liveness(caller: Caller, request: InitiateLivenessRequest | None = None) -> dict[str, Any]:
        duration = (request.area_duration if request else None) or settings.liveness.area_duration
        challenge = Challenge(tuple(generate_sequence()), duration)
        session_id = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        document = {"sequence": list(challenge.sequence), "area_duration": duration, "key": caller}
        await run_in_threadpool(state.store.create_session, session_id, document, settings.redis.session_ttl)
        return {
            "success": True,
            "session_id": session_id,
            "sequence": list(challenge.sequence),
            "area_duration": duration,
            "total_duration": challenge.total_duration,
            "expires_in": settings.redis.session_ttl,
            "instructions": (
                f"Look at each highlighted area for {duration:g} seconds, in turn, keeping your face in view of the "
                "camera. Move your eyes; you may turn your head a little."
            ),
        }

    @app.post(
        "/submit-liveness",
        tags=["liveness"],
        summary="Submit the recorded challenge video (multipart: session_id, video)",
        response_model=SubmitLivenessResponse,
        responses={
            **ERROR_RESPONSES,
            404: ERROR_RESPONSES[400] | {"description": "unknown or expired session"},
            409: ERROR_RESPONSES[400] | {"description": "the session was already submitted"},
        },
    )
    async def submit_liveness(
        caller: Caller, session_id: Annotated[str, Form()], video: Annotated[UploadFile, File()]
    ) -> dict[str, Any]:
        started = time.perf_counter()
        session = await run_in_threadpool(state.store.get_session, session_id)
        if session is None:
            raise ApiError(404, "unknown_session", "no such session: it never existed or it has expired")
        if session.get("key") != caller:
            raise ApiError(403, "session_not_yours", "this session was opened with another API key")
        if session["state"] != SessionState.PENDING.value:
            raise ApiError(409, "session_used", f"this session was already {session['state']}; open a new one")
        require_inference()
        path = spool / f"{session_id}-{secrets.token_hex(4)}.video"
        try:
            size = 0
            with path.open("wb") as handle:
                while chunk := await video.read(UPLOAD_CHUNK):
                    size += len(chunk)
                    if size > settings.http.max_video_size:
                        raise ApiError(
                            413, "video_too_large", f"the video is larger than {settings.http.max_video_size} bytes"
                        )
                    handle.write(chunk)
            if size == 0:
                raise ApiError(400, "empty_video", "the video is empty")
            try:
                await run_in_threadpool(
                    state.store.transition, session_id, SessionState.PENDING, SessionState.SUBMITTED
                )
            except SessionConflict as exc:
                if exc.found == "missing":
                    raise ApiError(404, "unknown_session", "the session expired before the upload finished") from None
                raise ApiError(409, "session_used", f"this session was already {exc.found}; open a new one") from None
            payload = {
                "video_path": str(path),
                "sequence": session["sequence"],
                "area_duration": session["area_duration"],
            }
            timeout = max(settings.http.request_timeout, LIVENESS_TIMEOUT_FLOOR)
            result = await state.bus.acall(LIVENESS_METHOD, payload, timeout=timeout)
        finally:
            path.unlink(missing_ok=True)
        await run_in_threadpool(
            state.store.transition, session_id, SessionState.SUBMITTED, SessionState.COMPLETED,
            result=result["result"], overall_accuracy=result["overall_accuracy"],
        )  # fmt: skip
        return {
            "success": True,
            "session_id": session_id,
            **result,
            "processing_time": round(time.perf_counter() - started, 4),
        }

    return app
