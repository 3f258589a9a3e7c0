"""Errors to HTTP, in one place: ``{"success": false, "error": {"code", "message", ...}}`` for every failure.

The codes and their statuses are the catalogue in :mod:`edge.errors` (docs/ERRORS.md).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.errors import ErrorCode, FacematchError, RateLimited

log = logging.getLogger("facematch.hub")

# Endpoints whose body is JSON: a form or a file sent to them is told so (415), not "field required".
JSON_ENDPOINTS = ("/match", "/initiate-liveness", "/page-tokens")


def error_response(code: ErrorCode, message: str, headers: dict[str, str] | None = None, **detail: Any) -> JSONResponse:
    body = {"success": False, "error": {"code": code.value, "message": message, **detail}}
    return JSONResponse(body, status_code=code.status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "header", "path", "form"):
        parts = parts[1:]
    return ".".join(parts)


def _describe(error: dict[str, Any]) -> str:
    if error["type"] == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"the body is not valid JSON{f' ({reason})' if reason else ''}"
    return str(error["msg"])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FacematchError)
    async def product_error(request: Request, exc: FacematchError) -> JSONResponse:
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        elif exc.code is ErrorCode.OVERLOADED:  # from the worker (its decoding budget): no figure came with it
            headers = {"Retry-After": "1"}
        if exc.code is ErrorCode.INTERNAL:
            log.error("internal error on %s: %s", request.url.path, exc.message)
        return error_response(exc.code, exc.message, headers, **exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.url.path in JSON_ENDPOINTS and content_type not in ("application/json", ""):
            return error_response(
                ErrorCode.JSON_EXPECTED,
                f"{request.url.path} takes a JSON body (Content-Type: application/json), not {content_type}",
            )
        problems = [{"field": _field(e["loc"]) or "body", "message": _describe(e)} for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return error_response(ErrorCode.INVALID_REQUEST, summary, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: ErrorCode.UNREADABLE_BODY, 404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED,
            413: ErrorCode.BODY_TOO_LARGE,
        }.get(exc.status_code)  # fmt: skip
        if code is None:
            body = {"success": False, "error": {"code": "http_error", "message": str(exc.detail)}}
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        return error_response(code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(ErrorCode.INTERNAL, "an unexpected error occurred; it was logged on the device")
