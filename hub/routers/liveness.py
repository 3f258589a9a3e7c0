"""``POST /initiate-liveness`` and ``POST /submit-liveness``: the web-mode eye-tracking challenge.

Session rules (ownership, single use, giving back a session that was never scored) live in :mod:`edge.sessions`.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from edge.bus import RpcMethod
from edge.bus.messages import LivenessResult
from edge.errors import ErrorCode, FacematchError, InputError
from edge.sessions import Session
from hub.deps import AnyCaller, Caller, Hub
from hub.schemas import (
    COMMON_ERRORS,
    InitiateLivenessRequest,
    InitiateLivenessResponse,
    ScheduleWindow,
    StreamChunkResponse,
    SubmitLivenessResponse,
    error_responses,
)
from hub.spool import scoring_request, spool_path, spool_unavailable
from hub.state import HubState

router = APIRouter(tags=["liveness"])

UPLOAD_CHUNK = 1 << 20
# Scoring a video takes ~1 s; the RPC may wait this much longer than REQUEST_TIMEOUT for it.
LIVENESS_TIMEOUT_FLOOR = 60.0


@router.post(
    "/initiate-liveness",
    summary="Start an eye-tracking challenge: a random sequence of 3 areas of the 2×3 grid",
    response_model=InitiateLivenessResponse,
    responses=error_responses(400, 415, *COMMON_ERRORS),
)
async def initiate_liveness(
    caller: AnyCaller, hub: Hub, request: InitiateLivenessRequest | None = None
) -> InitiateLivenessResponse:
    duration = (request.area_duration if request else None) or hub.settings.liveness.area_duration
    session = await run_in_threadpool(hub.sessions.open, caller.id, duration)
    return InitiateLivenessResponse(
        session_id=session.session_id,
        sequence=list(session.challenge.sequence),
        area_duration=duration,
        total_duration=session.challenge.total_duration,
        schedule=[ScheduleWindow(cell=w.cell, start=w.start, end=w.end) for w in session.challenge.windows()],
        expires_in=hub.sessions.ttl,
        instructions=(
            f"Look at each highlighted area while it is lit (about {duration:g} seconds each; the exact times are in "
            "schedule), in turn, keeping your face in view of the camera. Move your eyes; you may turn your head a "
            "little."
        ),
    )


@router.post(
    "/submit-liveness",
    summary="Submit the recorded challenge video (multipart: session_id, video)",
    response_model=SubmitLivenessResponse,
    responses=error_responses(400, 403, 404, 409, 413, *COMMON_ERRORS, 504),
)
async def submit_liveness(
    caller: AnyCaller, hub: Hub, session_id: Annotated[str, Form()], video: Annotated[UploadFile, File()]
) -> SubmitLivenessResponse:
    started = time.perf_counter()
    session = await run_in_threadpool(hub.sessions.check, session_id, caller.id)
    hub.require(RpcMethod.LIVENESS)
    with hub.liveness_slots.take():
        return await _score(hub, caller, session, video, started)


async def _score(
    hub: HubState, caller: Caller, session: Session, video: UploadFile, started: float
) -> SubmitLivenessResponse:
    """Spool the upload, claim the session, have it scored, record the outcome."""
    settings = hub.settings
    session_id = session.session_id
    path = spool_path(hub.spool, session_id, "video")
    try:
        size = 0
        try:
            with path.open("wb") as handle:
                while chunk := await video.read(UPLOAD_CHUNK):
                    size += len(chunk)
                    if size > settings.http.max_video_size:
                        raise InputError(
                            f"the video is larger than {settings.http.max_video_size} bytes", ErrorCode.VIDEO_TOO_LARGE
                        )
                    handle.write(chunk)
        except OSError as exc:  # the session is untouched
            raise spool_unavailable(exc) from None
        if size == 0:
            raise InputError("the video is empty", ErrorCode.EMPTY_VIDEO)
        await run_in_threadpool(hub.sessions.claim, session_id, caller.id)
        request = scoring_request(path, session.challenge)
        timeout = max(settings.http.request_timeout, LIVENESS_TIMEOUT_FLOOR)
        try:
            result: LivenessResult = await hub.bus.acall(RpcMethod.LIVENESS, request, timeout=timeout)
        except FacematchError:
            # Never scored (undecodable video, a worker or the broker failed): the session stays usable.
            await run_in_threadpool(hub.sessions.release, session_id)
            raise
    finally:
        path.unlink(missing_ok=True)
    await run_in_threadpool(hub.sessions.complete, session_id, result.result, result.overall_accuracy)
    return SubmitLivenessResponse(
        **result.model_dump(), session_id=session_id, processing_time=round(time.perf_counter() - started, 4)
    )


# -- streamed: the page sends the recording while the challenge runs (hub/streams.py) ----------------------------------


@router.post(
    "/submit-liveness/stream/{session_id}",
    summary="Send the next chunk of the challenge video while it is being recorded (body: the chunk's bytes)",
    response_model=StreamChunkResponse,
    responses=error_responses(400, 403, 404, 409, 413, *COMMON_ERRORS),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def stream_chunk(
    caller: AnyCaller,
    hub: Hub,
    session_id: str,
    request: Request,
    index: Annotated[int, Query(ge=0, le=100_000, description="0 for the first chunk, then 1, 2, … in order")],
) -> StreamChunkResponse:
    """Chunks are the recorder's own pieces (MediaRecorder with a timeslice), joined in order they make the video
    that `/submit-liveness` would take. The first chunk claims the session; the video is scored as it arrives."""
    chunk = await request.body()
    stream = await hub.streams.add_chunk(caller, session_id, index, chunk)
    return StreamChunkResponse(session_id=session_id, index=index, received=stream.size)


@router.post(
    "/submit-liveness/stream/{session_id}/end",
    summary="Say the streamed video is complete and get the verdict (the same answer as /submit-liveness)",
    response_model=SubmitLivenessResponse,
    responses=error_responses(400, 403, 404, 409, *COMMON_ERRORS, 504),
)
async def stream_end(caller: AnyCaller, hub: Hub, session_id: str) -> SubmitLivenessResponse:
    """`processing_time` is the time from this request to the verdict: most of the video was scored while it
    arrived."""
    started = time.perf_counter()
    result = await hub.streams.finish(caller, session_id)
    return SubmitLivenessResponse(
        **result.model_dump(), session_id=session_id, processing_time=round(time.perf_counter() - started, 4)
    )
