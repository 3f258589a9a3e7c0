"""How uvicorn serves the hub: forwarding headers believed only from configured proxies, and connections whose
request head does not arrive in time closed (uvicorn itself waits for a head forever)."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from edge.config import Settings


class HeadTimeoutProtocol(H11Protocol):
    """h11 with a deadline for each request head: a client that opens a connection, or starts a request, and then
    trickles or stops is disconnected after ``head_timeout`` seconds. The body's own deadline is the hub's
    BodyGuard middleware."""

    head_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _head_too_slow(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # still waiting for (the rest of) a head
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete and self._head_timer is not None:
            self._head_timer.cancel()  # the head is in: the request runs
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)


def server_config(settings: Settings, app: Any) -> uvicorn.Config:
    """uvicorn's settings for the hub. Forwarding headers are believed only from configured proxies: uvicorn's own
    default trusts them from 127.0.0.1, which let any local client choose its address for the rate limits."""
    trusted = settings.http.trusted_proxies
    protocol = type("HubProtocol", (HeadTimeoutProtocol,), {"head_timeout": settings.http.header_timeout})
    return uvicorn.Config(
        app, host=settings.http.host, port=settings.http.port, log_level=settings.log_level.lower(),
        proxy_headers=bool(trusted), forwarded_allow_ips=",".join(trusted) if trusted else "", http=protocol,
    )  # fmt: skip
