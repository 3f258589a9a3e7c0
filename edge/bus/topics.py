"""Every topic string of the product, and the names that go into them (components, RPC methods).

This is the one module that spells topics. Every topic starts with ``<mqtt.topic_prefix>/<device_id>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edge.config import Settings

ONLINE = "online"
OFFLINE = "offline"
# Inference workers share requests through this MQTT v5 shared-subscription group.
RPC_SHARE_GROUP = "inference"


class Component(str, Enum):
    """The processes of a device; each has a status topic per instance."""

    SUPERVISOR = "up"
    HUB = "hub"
    INFERENCE = "inference"
    CAMERA = "camera"
    DISPLAY = "display"
    DOOR = "door"


class RpcMethod(str, Enum):
    """What the hub (or any client) may ask an inference worker."""

    MATCH = "match"
    HEALTH = "health"
    # Scores a video in the spool directory, so only workers on the caller's host may answer it.
    LIVENESS = "liveness"
    # The same for a video still being uploaded (complete when <video_path>.end exists): scored as it arrives.
    LIVENESS_STREAM = "liveness-stream"
    # The gallery: 1:N search, and the steps that need the models (enrolment, negatives, re-embedding).
    IDENTIFY = "identify"
    ENROLL = "enroll"
    NEGATIVE = "negative"
    REEMBED = "reembed"

    @property
    def host_scoped(self) -> bool:
        return self in (RpcMethod.LIVENESS, RpcMethod.LIVENESS_STREAM)


class EventKind(str, Enum):
    MATCH = "match"
    LIVENESS = "liveness"
    ACCESS = "access"
    DOOR = "door"
    CALIBRATION = "calibration"


def rpc_route(method: RpcMethod, host: str | None = None) -> str:
    """The topic level(s) a method is served on: ``match``, or ``liveness/<host>`` for a host-scoped method."""
    if method.host_scoped:
        if not host:
            raise ValueError(f"the {method.value} RPC is served per host: name the host")
        return f"{method.value}/{host}"
    return method.value


@dataclass(frozen=True)
class Topics:
    """Every topic of the product, built from ``<prefix>/<device_id>/``."""

    prefix: str
    device_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(settings.mqtt.topic_prefix.strip("/"), settings.device_id)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    # -- presence ---------------------------------------------------------------------------------------------

    def status(self, component: Component, instance: str) -> str:
        """Retained ``online``/``offline`` of one instance of a component (also its last will)."""
        return f"{self.base}/{component.value}/{instance}/status"

    def info(self, component: Component, instance: str) -> str:
        """Retained description of one instance (host, RPC routes it serves, version)."""
        return f"{self.base}/{component.value}/{instance}/info"

    @property
    def all_presence(self) -> tuple[str, str]:
        """The filters of every instance's status and info (two, so no RPC traffic matches)."""
        return f"{self.base}/+/+/status", f"{self.base}/+/+/info"

    def parse_presence(self, topic: str) -> tuple[Component, str, str] | None:
        """``…/inference/door-1/status`` -> (INFERENCE, ``door-1``, ``status``); ``None`` for any other topic."""
        if not topic.startswith(self.base + "/"):
            return None
        parts = topic[len(self.base) + 1 :].split("/")
        if len(parts) != 3 or parts[2] not in ("status", "info"):
            return None
        try:
            component = Component(parts[0])
        except ValueError:
            return None
        return component, parts[1], parts[2]

    # -- RPC --------------------------------------------------------------------------------------------------

    def rpc_request(self, method: RpcMethod, host: str | None = None) -> str:
        return f"{self.base}/rpc/{rpc_route(method, host)}/request"

    def rpc_shared(self, method: RpcMethod, host: str | None = None) -> str:
        return f"$share/{RPC_SHARE_GROUP}/{self.rpc_request(method, host)}"

    def rpc_reply(self, client_id: str) -> str:
        return f"{self.base}/rpc/reply/{client_id}"

    # -- device mode and fleet --------------------------------------------------------------------------------

    @property
    def camera_frame(self) -> str:
        return f"{self.base}/camera/frame"

    @property
    def challenge_start(self) -> str:
        return f"{self.base}/challenge/start"

    @property
    def challenge_end(self) -> str:
        return f"{self.base}/challenge/end"

    def event(self, kind: EventKind) -> str:
        return f"{self.base}/events/{EventKind(kind).value}"

    @property
    def event_filter(self) -> str:
        """Every event of the device."""
        return f"{self.base}/events/#"

    @property
    def door_command(self) -> str:
        return f"{self.base}/door/command"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def command_result(self, name: str) -> str:
        return f"{self.base}/cmd/{name}/result"

    @property
    def door_indicator(self) -> str:
        return f"{self.base}/door/indicator"

    @property
    def display_timing(self) -> str:
        return f"{self.base}/display/timing"

    @property
    def gallery_changed(self) -> str:
        return f"{self.base}/gallery/changed"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"
