"""The web page that runs the challenge in a browser, and the short-lived page tokens that authorise it."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse

from hub.deps import Hub, KeyHolder
from hub.schemas import COMMON_ERRORS, PageTokenRequest, PageTokenResponse, error_responses

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


@router.get("/operator", include_in_schema=False)
async def operator() -> FileResponse:
    """The operator's page: enrol people, see and delete them, recent identifications (needs an API key)."""
    return FileResponse(STATIC_DIR / "operator.html")


@router.get("/static", include_in_schema=False)
async def static_root() -> RedirectResponse:
    return RedirectResponse("/static/index.html")


def page_link(base_url: str, token: str) -> str:
    """The page's address with the token in the fragment: browsers never send a fragment to the server."""
    return f"{base_url.rstrip('/')}/#token={token}"


@router.post(
    "/page-tokens",
    tags=["page"],
    summary="Issue a short-lived token that lets the web page run liveness challenges (and nothing else)",
    response_model=PageTokenResponse,
    responses=error_responses(400, 403, 415, *COMMON_ERRORS),
)
async def create_page_token(
    caller: KeyHolder, hub: Hub, http_request: Request, request: PageTokenRequest | None = None
) -> PageTokenResponse:
    hours = request.hours if request else PageTokenRequest().hours
    issued = await run_in_threadpool(hub.page_tokens.create, int(hours * 3600), caller.id)
    return PageTokenResponse(
        token=issued.token, expires_in=issued.expires_in, url=page_link(str(http_request.base_url), issued.token)
    )
