"""Dependencies shared by the routers: the hub's state and who the caller is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from edge.errors import AuthError, ErrorCode
from hub.state import HubState


def hub_state(request: Request) -> HubState:
    return request.app.state.hub


Hub = Annotated[HubState, Depends(hub_state)]


@dataclass(frozen=True)
class Caller:
    """An API key (``kind == "key"``) or a kiosk page token (``"page"``); ``id`` owns the sessions it opens."""

    id: str
    kind: str


def caller(
    request: Request,
    hub: Hub,
    x_api_key: Annotated[str | None, Header(description="an API key (facematch keys create)")] = None,
    x_page_token: Annotated[str | None, Header(description="a kiosk page token (liveness only)")] = None,
) -> Caller:
    """Who is calling, after the per-address and per-credential rate limits (each counted once per request).

    A sync function on purpose: FastAPI runs it in its thread pool, where the Redis round trips may block."""
    hub.limits.check("address", request.client.host if request.client else "unknown")
    if x_api_key:
        who = Caller(hub.keys.identify(x_api_key), "key")
    elif x_page_token:
        who = Caller(hub.page_tokens.identify(x_page_token), "page")
    else:
        raise AuthError("send an API key in the X-API-Key header (or open the page with a page link)",
                        ErrorCode.MISSING_CREDENTIALS)  # fmt: skip
    hub.limits.check("key", who.id)
    return who


def key_holder(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """Only an API key: a page token runs liveness challenges and nothing else."""
    if who.kind != "key":
        raise AuthError("a page token only allows the liveness challenge; this needs an API key", ErrorCode.FORBIDDEN)
    return who


AnyCaller = Annotated[Caller, Depends(caller)]
KeyHolder = Annotated[Caller, Depends(key_holder)]
