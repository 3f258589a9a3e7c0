"""What the hub holds for its lifetime: the bus and who is online, Redis, sessions, credentials, limits."""

from __future__ import annotations

from edge.bus import Bus, Component, Presence, RpcMethod, rpc_route
from edge.config import Settings
from edge.credentials import redis_url
from edge.errors import BrokerUnavailable, InferenceUnavailable
from edge.sessions import Sessions
from edge.store import Store
from hub.images import ImageLoader
from hub.security import ApiKeys, PageTokens, RateLimits


class HubState:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.bus = Bus(settings, Component.HUB)
        self.presence = Presence(self.bus)
        self.store = Store(redis_url(settings), socket_timeout=2.0)
        self.sessions = Sessions(self.store, settings.redis.session_ttl)
        self.keys = ApiKeys(settings)
        self.page_tokens = PageTokens(self.store)
        self.limits = RateLimits(settings)
        self.images = ImageLoader(settings)
        self.spool = settings.paths.state_dir / "spool"

    def start(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self.bus.start(wait=3.0)

    async def aclose(self) -> None:
        await self.images.close()
        self.bus.stop()
        self.store.close()

    def require(self, method: RpcMethod) -> None:
        """Fail at once (503 naming what is missing) unless a live worker serves ``method`` for this hub."""
        if not self.bus.connected:
            raise BrokerUnavailable(f"the MQTT broker {self.bus.address} is not connected")
        route = rpc_route(method, self.settings.host_id if method.host_scoped else None)
        if not self.presence.serves(route):
            where = f" on this host ({self.settings.host_id})" if method.host_scoped else ""
            raise InferenceUnavailable(f"no inference worker{where} is online to serve {method.value}")
