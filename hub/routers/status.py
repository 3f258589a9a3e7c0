"""``GET /health``: readiness of the hub and of what it depends on (no secrets: URLs are shown without passwords)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge import __version__
from edge.bus import Component, RpcMethod
from edge.bus.messages import HealthRequest
from edge.config import redact
from edge.errors import FacematchError
from hub.deps import Hub

router = APIRouter(tags=["status"])


@router.get("/health", summary="Readiness of the hub and of everything it depends on")
async def health(hub: Hub) -> JSONResponse:
    settings = hub.settings
    redis_ok = await run_in_threadpool(hub.store.ping)
    broker_ok = hub.bus.connected
    instances = hub.presence.online(Component.INFERENCE)
    inference: dict[str, Any] = {"ok": False, "instances": instances}
    models: dict[str, bool] = {}
    if broker_ok and hub.presence.serves(RpcMethod.MATCH.value):
        try:
            info = await hub.bus.acall(RpcMethod.HEALTH, HealthRequest(), timeout=3.0)
            inference.update(ok=True, version=info.version)
            models = {name: True for name in info.models.values()}
        except FacematchError as exc:
            inference["error"] = exc.message
    dependencies = {
        "redis": {"ok": redis_ok, "url": redact(settings.redis.url)},
        "broker": {"ok": broker_ok, "url": redact(settings.mqtt.url)},
        "inference": inference,
    }
    healthy = all(dep["ok"] for dep in dependencies.values())
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": time.time(),
        "models": models,
        "dependencies": dependencies,
        "api_keys_configured": hub.keys.configured,
        "version": __version__,
    }
    return JSONResponse(body, status_code=200 if healthy else 503)
