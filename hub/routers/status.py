"""``GET /health``: readiness of the hub and of what it depends on (no secrets: URLs are shown without passwords)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge import __version__
from edge.bus import Component, RpcMethod
from edge.bus.messages import HealthRequest
from edge.config import redact
from edge.errors import FacematchError
from hub.deps import Hub

router = APIRouter(tags=["status"])


def _key_is_valid(hub, key: str | None) -> bool:
    if not key:
        return False
    try:
        hub.keys.identify(key)
    except FacematchError:
        return False
    return True


@router.get(
    "/health",
    summary="Readiness of the hub and of everything it depends on",
    description="Without a key: what a load balancer needs (status, the models, which dependency is down). "
    "With a valid X-API-Key: each dependency's details too.",
)
async def health(hub: Hub, x_api_key: Annotated[str | None, Header()] = None) -> JSONResponse:
    settings = hub.settings
    redis_ok = await run_in_threadpool(hub.store.ping)
    broker_ok = hub.bus.connected
    instances = hub.presence.online(Component.INFERENCE)
    inference: dict[str, Any] = {"ok": False, "instances": instances}
    models: dict[str, bool] = {}
    if broker_ok and hub.presence.serves(RpcMethod.MATCH.value):
        try:
            info = await hub.bus.acall(RpcMethod.HEALTH, HealthRequest(), timeout=3.0)
            inference.update(ok=True, version=info.version, runs_on=info.runs_on)
            models = {name: True for name in info.models.values()}
        except FacematchError as exc:
            inference["error"] = exc.message
    dependencies = {
        "redis": {"ok": redis_ok, "url": redact(settings.redis.url)},
        "broker": {"ok": broker_ok, "url": redact(settings.mqtt.url)},
        "inference": inference,
    }
    healthy = all(dep["ok"] for dep in dependencies.values())
    body: dict[str, Any] = {
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": time.time(),
        "models": models,
        "unavailable": [name for name, dep in dependencies.items() if not dep["ok"]],
        "version": __version__,
    }
    if await run_in_threadpool(_key_is_valid, hub, x_api_key):
        body.update(dependencies=dependencies, api_keys_configured=hub.keys.configured)
    return JSONResponse(body, status_code=200 if healthy else 503)
