"""What the hub knows about its dependencies: Redis, the broker and the components' retained status."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from edge.bus import ONLINE, Bus
from edge.config import Settings
from edge.store import Store


class HubState:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.bus = Bus(settings, "hub")
        self.store = Store(settings.redis.url, socket_timeout=2.0)
        self._components: dict[str, str] = {}
        self._lock = threading.Lock()
        self.bus.subscribe(self.bus.topics.all_status, self._on_status)

    def start(self) -> None:
        self.bus.start(wait=3.0)

    def stop(self) -> None:
        self.bus.stop()
        self.store.close()

    def _on_status(self, message: mqtt.MQTTMessage) -> None:
        component = self.bus.topics.component_of_status(message.topic)
        if component:
            with self._lock:
                self._components[component] = message.payload.decode(errors="replace")

    def component_online(self, component: str) -> bool:
        with self._lock:
            return self._components.get(component) == ONLINE
