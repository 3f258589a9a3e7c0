"""``POST /match``: compare the faces of two images."""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import APIRouter

from edge.bus import RpcMethod
from edge.bus.messages import MatchRequest as MatchRpc
from edge.bus.messages import MatchResult
from hub.deps import Hub, KeyHolder
from hub.schemas import COMMON_ERRORS, MatchRequest, MatchResponse, error_responses

router = APIRouter(tags=["matching"])


@router.post(
    "/match",
    summary="Compare the faces of two images",
    response_model=MatchResponse,
    response_model_exclude_none=True,
    responses=error_responses(400, 403, 413, 415, *COMMON_ERRORS, 504),
)
async def match(request: MatchRequest, caller: KeyHolder, hub: Hub) -> MatchResponse:
    started = time.perf_counter()
    hub.require(RpcMethod.MATCH)
    first, second = await asyncio.gather(
        hub.images.load("image1", request.image1), hub.images.load("image2", request.image2)
    )
    threshold = request.threshold if request.threshold is not None else hub.settings.matching.similarity_threshold
    rpc = MatchRpc(
        image1=base64.b64encode(first).decode(), image2=base64.b64encode(second).decode(),
        threshold=threshold, verbose=request.verbose,
    )  # fmt: skip
    result: MatchResult = await hub.bus.acall(RpcMethod.MATCH, rpc, timeout=hub.settings.http.request_timeout)
    return MatchResponse(**result.model_dump(), processing_time=round(time.perf_counter() - started, 4))
