"""Guards on every request, enforced while it streams in: the body's size and time, and requests in flight per client
address. A missing or false Content-Length, a chunked body, a trickle or a crowd from one address are no way around.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.errors import ErrorCode


class BodyGuard:
    """Answer 413 to a body over ``limit_for(path)`` bytes, 408 to one not complete within ``body_timeout`` seconds,
    and 429 to a request from an address that already has ``per_address`` in flight.

    A declared Content-Length over the limit is refused before reading. A body that grows past the limit, or stalls
    past the deadline, is cut there: the application sees the body end, and whatever it answers is replaced by the
    413/408, so a parser's "error parsing the body" never reaches the client.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], body_timeout: float, per_address: int):
        self.app = app
        self.limit_for = limit_for
        self.body_timeout = body_timeout
        self.per_address = per_address
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        if self.in_flight[address] >= self.per_address:
            busy = f"{self.per_address} requests from this address are already in flight"
            await _refuse(send, ErrorCode.RATE_LIMITED, busy, retry_after=1)
            return
        self.in_flight[address] += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_flight[address] -= 1
            if not self.in_flight[address]:
                del self.in_flight[address]

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, ErrorCode.BODY_TOO_LARGE, f"the request body is over {limit} bytes")
            return
        deadline = time.monotonic() + self.body_timeout
        received = 0
        cut: tuple[ErrorCode, str] | None = None
        started = False
        answered = False
        body_done = False
        end = {"type": "http.request", "body": b"", "more_body": False}

        async def guarded_receive() -> Message:
            nonlocal received, cut, body_done
            if cut is not None or body_done:
                return end if cut is not None else await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                cut = (ErrorCode.REQUEST_TIMEOUT, f"the request body did not arrive within {self.body_timeout:g} s")
                return end
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    cut = (ErrorCode.BODY_TOO_LARGE, f"the request body is over {limit} bytes")
                    return end
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered, started
            if cut is None or started:
                started = started or message["type"] == "http.response.start"
                await send(message)
                return
            if not answered:  # the application's own answer to a cut body is replaced, once
                answered = True
                await _refuse(send, *cut)

        await self.app(scope, guarded_receive, guarded_send)


async def _refuse(send: Send, code: ErrorCode, message: str, retry_after: int | None = None) -> None:
    body = json.dumps({"success": False, "error": {"code": code.value, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": code.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
