"""Who is online: every instance's retained status and info, so that "inference is available" means at least one
live instance serves the route asked for (one worker stopping never hides the others)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pydantic import ValidationError

from edge.bus.client import Bus, Message
from edge.bus.messages import WorkerInfo
from edge.bus.topics import ONLINE, Component


@dataclass
class Instance:
    status: str = ""
    info: WorkerInfo | None = None

    @property
    def online(self) -> bool:
        return self.status == ONLINE


class Presence:
    """Follows the status and info of every component instance of this device."""

    def __init__(self, bus: Bus):
        self._bus = bus
        self._instances: dict[tuple[Component, str], Instance] = {}
        self._lock = threading.RLock()  # re-entrant: wait_until's predicate takes it again
        self._changed = threading.Condition(self._lock)
        for topic_filter in bus.topics.all_presence:
            bus.subscribe(topic_filter, self._on_message)

    def _on_message(self, message: Message) -> None:
        parsed = self._bus.topics.parse_presence(message.topic)
        if parsed is None:
            return
        component, name, kind = parsed
        gone = False
        with self._lock:
            instance = self._instances.setdefault((component, name), Instance())
            if kind == "status":
                was_online = instance.online
                instance.status = message.payload.decode(errors="replace")
                gone = was_online and not instance.online
            else:
                try:
                    instance.info = WorkerInfo.model_validate_json(message.payload) if message.payload else None
                except ValidationError:
                    instance.info = None
            self._changed.notify_all()
        if kind == "status" and gone:
            self._bus.instance_gone(component, name)

    def local_pids(self, component: Component, host: str) -> list[int]:
        """Process ids of the online instances of ``component`` that run on ``host`` (from their retained info)."""
        with self._lock:
            return [i.info.pid for (c, _), i in self._instances.items()
                    if c == component and i.online and i.info is not None and i.info.host == host]  # fmt: skip

    def online(self, component: Component) -> list[str]:
        """The names of the instances of ``component`` that are online."""
        with self._lock:
            return sorted(n for (c, n), i in self._instances.items() if c == component and i.online)

    def serves(self, route: str, component: Component = Component.INFERENCE) -> bool:
        """True when an online instance has said it serves ``route`` (``match``, ``liveness/<host>``, …)."""
        with self._lock:
            return any(
                c == component and i.online and i.info is not None and route in i.info.routes
                for (c, _), i in self._instances.items()
            )

    def wait_until(self, predicate, timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (checked on every presence change) or ``timeout`` passes."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)
