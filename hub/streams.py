"""Streamed challenge videos: the page sends the recording in chunks while the challenge runs, and an inference
worker scores the frames as they arrive, so the verdict is ready moments after the last chunk.

A stream belongs to one liveness session and follows its rules: the first chunk claims the session (one stream or
one whole-file submit wins), chunks come in order and within the video size limit, and the end may not come before
the challenge could have been shown in full (425). A stream that is never scored — its video undecodable, cut off, or
its worker gone — gives the session back, as a failed whole-file upload does. The spooled file is removed in every case.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi.concurrency import run_in_threadpool

from edge.bus import RpcMethod
from edge.bus.messages import LivenessResult
from edge.errors import ErrorCode, FacematchError, InputError, SessionError
from edge.sessions import Session
from edge.vision.stream import end_marker
from hub.spool import scoring_request, spool_path, spool_unavailable

if TYPE_CHECKING:
    from hub.deps import Caller
    from hub.state import HubState

log = logging.getLogger(__name__)

# Scoring ends this long after the video does at the latest (the RPC's deadline beyond the challenge's length).
SCORING_SLACK = 60.0
# A stream whose scoring ended (failed, or the client vanished before its end) is forgotten after this long.
FORGET_AFTER = 30.0


@dataclass
class Stream:
    session: Session
    owner: str
    path: Path
    scoring: asyncio.Task[LivenessResult]
    next_index: int = 0
    size: int = 0
    ending: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Streams:
    def __init__(self, hub: HubState):
        self.hub = hub
        self.active: dict[str, Stream] = {}

    async def add_chunk(self, caller: Caller, session_id: str, index: int, chunk: bytes) -> Stream:
        if index == 0 and session_id not in self.active:
            stream = await self._open(caller, session_id)
        else:
            none_open = f"no stream of this session is open: it starts with chunk 0, not {index}"
            stream = await self._stream_of(caller, session_id, none_open)
        async with stream.lock:
            if stream.ending or index != stream.next_index:
                raise _out_of_order(
                    "the stream is over" if stream.ending else f"expected chunk {stream.next_index}, got {index}"
                )
            if stream.scoring.done() and stream.scoring.exception() is not None:
                # The worker gave up already (undecodable video, a lost worker): say so now, not at the end.
                await self._abandon(stream)
                raise stream.scoring.exception()  # type: ignore[misc]
            limit = self.hub.settings.http.max_video_size
            if stream.size + len(chunk) > limit:
                await self._abandon(stream)
                raise InputError(f"the video is larger than {limit} bytes", ErrorCode.VIDEO_TOO_LARGE)
            try:
                await run_in_threadpool(_append, stream.path, chunk)
            except OSError as exc:  # the disk filled up mid-stream: nothing scored, the session goes back
                await self._abandon(stream)
                raise spool_unavailable(exc) from None
            stream.next_index += 1
            stream.size += len(chunk)
        return stream

    async def finish(self, caller: Caller, session_id: str) -> LivenessResult:
        """Mark the video complete and wait for its verdict; the session is used up once it is scored."""
        stream = await self._stream_of(caller, session_id, "no chunk of this session's video has arrived")
        async with stream.lock:
            if stream.ending:
                raise _out_of_order("the stream is already ending")
            stream.ending = True
        try:
            self.hub.sessions.require_shown(stream.session)
            if stream.size == 0:
                raise InputError("the video is empty", ErrorCode.EMPTY_VIDEO)
            await run_in_threadpool(end_marker(stream.path).touch)
            result = await asyncio.shield(stream.scoring)
        except FacematchError:
            await self._abandon(stream)
            raise
        self._discard(stream)
        await run_in_threadpool(self.hub.sessions.complete, session_id, result.result, result.overall_accuracy)
        return result

    async def _stream_of(self, caller: Caller, session_id: str, none_open: str) -> Stream:
        """The open stream of this session, if ``caller`` opened it; otherwise why not (the session's own 404 / 403 /
        409 first, then ``none_open``)."""
        stream = self.active.get(session_id)
        if stream is None:
            await run_in_threadpool(self.hub.sessions.check, session_id, caller.id)
            raise _out_of_order(none_open)
        if stream.owner != caller.id:
            raise SessionError("this session was opened by another client", ErrorCode.SESSION_NOT_YOURS)
        return stream

    async def _open(self, caller: Caller, session_id: str) -> Stream:
        hub = self.hub
        hub.require(RpcMethod.LIVENESS_STREAM)
        hub.liveness_slots.enter()
        try:
            session = await run_in_threadpool(hub.sessions.claim, session_id, caller.id, streaming=True)
        except BaseException:
            hub.liveness_slots.leave()
            raise
        path = spool_path(hub.spool, session_id, "stream")
        try:
            await run_in_threadpool(path.touch, 0o600)
        except OSError as exc:
            hub.liveness_slots.leave()
            await run_in_threadpool(hub.sessions.release, session_id)
            raise spool_unavailable(exc) from None
        request = scoring_request(path, session.challenge)
        timeout = session.challenge.total_duration + SCORING_SLACK
        scoring = asyncio.create_task(hub.bus.acall(RpcMethod.LIVENESS_STREAM, request, timeout=timeout))
        stream = Stream(session, caller.id, path, scoring)
        scoring.add_done_callback(lambda _: asyncio.get_running_loop().call_later(FORGET_AFTER, self._forget, stream))
        self.active[session_id] = stream
        return stream

    async def close(self) -> None:
        """The hub is stopping: every stream still open is abandoned (its session given back, its upload removed)."""
        for stream in list(self.active.values()):
            await self._abandon(stream)

    def _forget(self, stream: Stream) -> None:
        """A stream whose client never came back for its verdict: a scored session is used up (one attempt, one
        verdict, even unheard), an unscored one is given back."""
        if self.active.get(stream.session.session_id) is not stream:
            return
        log.info("stream of session %s abandoned by its client", stream.session.session_id[:8])
        if stream.scoring.exception() is None:
            self._discard(stream)
            result = stream.scoring.result()
            loop = asyncio.get_running_loop()
            loop.run_in_executor(
                None, self.hub.sessions.complete, stream.session.session_id, result.result, result.overall_accuracy
            )
        else:
            asyncio.get_running_loop().create_task(self._abandon(stream))

    async def _abandon(self, stream: Stream) -> None:
        """End a stream that will not be scored: the worker is told the video ended, the session is given back."""
        stream.ending = True
        self._discard(stream)  # a removed upload ends the worker's feed (edge.vision.stream)
        if stream.scoring.done():
            _ = stream.scoring.cancelled() or stream.scoring.exception()  # retrieved: it was answered to the client
        else:
            stream.scoring.cancel()
        try:
            await run_in_threadpool(self.hub.sessions.release, stream.session.session_id)
        except FacematchError as exc:  # Redis down: the session expires by itself
            log.warning("session %s not given back: %s", stream.session.session_id[:8], exc.message)

    def _discard(self, stream: Stream) -> None:
        if self.active.get(stream.session.session_id) is stream:
            del self.active[stream.session.session_id]
            self.hub.liveness_slots.leave()
        for leftover in (stream.path, end_marker(stream.path)):
            leftover.unlink(missing_ok=True)


def _append(path: Path, chunk: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(chunk)


def _out_of_order(message: str) -> SessionError:
    return SessionError(message, ErrorCode.STREAM_OUT_OF_ORDER)
