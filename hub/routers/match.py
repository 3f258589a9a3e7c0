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


async def load_both(hub: Hub, request: MatchRequest) -> tuple[bytes, bytes]:
    """Both images, side by side; when one fails, the other's download is cancelled at once (not left running
    against a slow server after the client has its answer)."""
    tasks = [asyncio.create_task(hub.images.load(field, value)) for field, value in
             (("image1", request.image1), ("image2", request.image2))]  # fmt: skip
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:  # in order: when both failed, image1's error is the one reported
            if task in done and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return tasks[0].result(), tasks[1].result()
    finally:
        for task in tasks:
            task.cancel()


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
    with hub.match_slots.take():
        return await _match(hub, request, started)


async def _match(hub: Hub, request: MatchRequest, started: float) -> MatchResponse:
    first, second = await load_both(hub, request)
    threshold = request.threshold if request.threshold is not None else hub.settings.matching.similarity_threshold
    rpc = MatchRpc(
        image1=base64.b64encode(first).decode(), image2=base64.b64encode(second).decode(),
        threshold=threshold, verbose=request.verbose,
    )  # fmt: skip
    result: MatchResult = await hub.bus.acall(RpcMethod.MATCH, rpc, timeout=hub.settings.http.request_timeout)
    return MatchResponse(**result.model_dump(), processing_time=round(time.perf_counter() - started, 4))
