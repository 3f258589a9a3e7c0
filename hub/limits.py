"""Request body limits, enforced while the body streams in (a missing or false Content-Length is no way around)."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.errors import ErrorCode


class BodyLimitMiddleware:
    """Answer 413 to any request whose body exceeds ``limit_for(path)`` bytes.

    A declared Content-Length over the limit is refused before reading. A body that grows past it while streaming
    (chunked, no length) is cut there: the application sees the body end, and whatever it answers is replaced by the
    413, so a parser's "error parsing the body" never reaches the client.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        received = 0
        exceeded = False
        started = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered, started
            if not exceeded or started:
                started = started or message["type"] == "http.response.start"
                await send(message)
                return
            if not answered:  # the application's own answer to a cut body is replaced, once
                answered = True
                await self._refuse(send, limit)

        await self.app(scope, counting_receive, guarded_send)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        error = {"code": ErrorCode.BODY_TOO_LARGE.value, "message": f"the request body is over {limit} bytes"}
        body = json.dumps({"success": False, "error": error}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
