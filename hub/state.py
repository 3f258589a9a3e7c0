"""What the hub holds for its lifetime: the bus and who is online, Redis, sessions, credentials, limits."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from edge.bus import Bus, Component, Presence, RpcMethod, rpc_route
from edge.config import Settings
from edge.credentials import redis_url
from edge.errors import BrokerUnavailable, ErrorCode, FacematchError, InferenceUnavailable, RateLimited
from edge.fleet import homeassistant
from edge.fleet.commands import CommandAgent
from edge.sessions import Sessions
from edge.store import Store
from edge.store.audit import Audit
from edge.store.gallery import Gallery
from edge.vision.model_id import configured_model_id
from hub.images import ImageLoader
from hub.security import ApiKeys, PageTokens, RateLimits
from hub.streams import Streams

log = logging.getLogger("facematch.hub")
# An enrolment's photos are embedded within about a minute (the RPC's timeout): a subject still pending after this
# long was left by a hub that died mid-enrolment.
PENDING_ENROLMENT_SECONDS = 600.0


class Slots:
    """At most ``size`` requests of one kind at once; one more is refused at once (503 + Retry-After), not queued."""

    def __init__(self, name: str, size: int):
        self.name = name
        self.size = size
        self.busy = 0

    def enter(self) -> None:
        # The event loop runs one coroutine at a time: the check and the increment cannot interleave.
        if self.busy >= self.size:
            raise RateLimited(
                f"the device is working on {self.size} {self.name} requests already; retry in a second",
                retry_after=1, code=ErrorCode.OVERLOADED,
            )  # fmt: skip
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()


class HubState:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.bus = Bus(settings, Component.HUB)
        self.presence = Presence(self.bus)
        self.store = Store(redis_url(settings), socket_timeout=2.0)
        self.sessions = Sessions(self.store, settings.redis.session_ttl)
        self.keys = ApiKeys(settings)
        self.page_tokens = PageTokens(self.store)
        self.gallery = Gallery.from_settings(self.store, settings)
        audit = Audit(self.store, settings.door.audit_retention_days)
        self.commands = CommandAgent(settings, self.bus, self.gallery, audit, self.presence.online,
                                     self.presence.local_pids)  # fmt: skip
        self.limits = RateLimits(settings)
        self.images = ImageLoader(settings)
        self.spool = settings.paths.state_dir / "spool"
        self.match_slots = Slots("/match", settings.http.max_inflight_match)
        self.liveness_slots = Slots("/submit-liveness", settings.http.max_inflight_liveness)
        self.streams = Streams(self)
        self._started = self._closed = False

    def start(self) -> None:
        """Once: a second start (an ASGI server or test tool running the lifespan again) changes nothing."""
        if self._started:
            return
        self._started = True
        self.spool.mkdir(parents=True, exist_ok=True)
        self.sweep_pending()
        self.commands.start()
        if self.settings.mqtt.home_assistant:
            for topic, payload in homeassistant.payloads(self.settings).items():
                self.bus.keep_retained(topic, payload)
        self.bus.start(wait=3.0)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.streams.close()
        await self.images.close()
        self.bus.stop()
        self.store.close()

    def sweep_pending(self) -> None:
        """Erase people whose enrolment a hub began and never finished (it died between creating them and enrolling
        their photos): none stays listed without a face. Redis being down only postpones it to the next call."""
        try:
            erased = self.gallery.sweep_pending(PENDING_ENROLMENT_SECONDS)
        except FacematchError as exc:
            log.warning("unfinished enrolments not swept: %s", exc.message)
            return
        if erased:
            log.warning("erased %d subject(s) whose enrolment never finished: %s", len(erased), ", ".join(erased))

    def model_id(self) -> str:
        """The embedding model the configured workers use (gallery summaries count faces for it)."""
        return configured_model_id(self.settings)

    def require(self, method: RpcMethod) -> None:
        """Fail at once (503 naming what is missing) unless a live worker serves ``method`` for this hub."""
        if not self.bus.connected:
            raise BrokerUnavailable(f"the MQTT broker {self.bus.address} is not connected")
        route = rpc_route(method, self.settings.host_id if method.host_scoped else None)
        if not self.presence.serves(route):
            where = f" on this host ({self.settings.host_id})" if method.host_scoped else ""
            raise InferenceUnavailable(f"no inference worker{where} is online to serve {method.value}")
