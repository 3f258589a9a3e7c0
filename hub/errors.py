"""One JSON error shape for every failure: ``{"success": false, "error": {"code", "message", ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.bus import BusUnavailable, RemoteError, RpcTimeout
from edge.store import StoreUnavailable
from hub.images import ImageInputError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **detail: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


def error_response(status: int, code: str, message: str, **detail: Any) -> JSONResponse:
    headers = {"Retry-After": str(detail.pop("retry_after"))} if "retry_after" in detail else None
    body = {"success": False, "error": {"code": code, "message": message, **detail}}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, **exc.detail)

    @app.exception_handler(ImageInputError)
    async def image_error(request: Request, exc: ImageInputError) -> JSONResponse:
        return error_response(exc.status, exc.code, str(exc), image=exc.image)

    @app.exception_handler(RemoteError)
    async def remote_error(request: Request, exc: RemoteError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, **exc.detail)

    @app.exception_handler(RpcTimeout)
    async def rpc_timeout(request: Request, exc: RpcTimeout) -> JSONResponse:
        return error_response(504, "inference_timeout", str(exc))

    @app.exception_handler(BusUnavailable)
    async def bus_down(request: Request, exc: BusUnavailable) -> JSONResponse:
        return error_response(503, "broker_unavailable", str(exc), dependency="broker")

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(503, "redis_unavailable", str(exc), dependency="redis")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]} for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
        return error_response(422, "invalid_request", summary, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))
