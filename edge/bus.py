"""The MQTT bus: topic names, the connection, status/last will, and request/response RPC.

This is the one module that knows topic strings. Every process (camera, inference, hub, display) talks to the
others through a :class:`Bus`. paho-mqtt 2.x, MQTT v5.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.config import Settings

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"
# Inference workers share requests through this MQTT v5 shared-subscription group.
RPC_SHARE_GROUP = "inference"


class BusError(Exception):
    """Base class of the bus's errors."""


class BusUnavailable(BusError):
    """The broker is not connected."""


class RpcTimeout(BusError):
    """No worker answered in time."""


class RemoteError(BusError):
    """The worker answered with an error: it carries the HTTP-like status, a code and a message."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail or {}

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message, **self.detail}


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

    def status(self, component: str) -> str:
        return f"{self.base}/{component}/status"

    @property
    def all_status(self) -> str:
        return f"{self.base}/+/status"

    @property
    def camera_frame(self) -> str:
        return f"{self.base}/camera/frame"

    def rpc_request(self, method: str) -> str:
        return f"{self.base}/rpc/{method}/request"

    def rpc_shared(self, method: str) -> str:
        return f"$share/{RPC_SHARE_GROUP}/{self.rpc_request(method)}"

    def rpc_reply(self, client_id: str) -> str:
        return f"{self.base}/rpc/reply/{client_id}"

    @property
    def challenge_start(self) -> str:
        return f"{self.base}/challenge/start"

    @property
    def challenge_end(self) -> str:
        return f"{self.base}/challenge/end"

    def event(self, kind: str) -> str:
        if kind not in ("match", "liveness", "access"):
            raise ValueError(f"unknown event kind {kind!r}")
        return f"{self.base}/events/{kind}"

    @property
    def door_command(self) -> str:
        return f"{self.base}/door/command"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def command_result(self, name: str) -> str:
        return f"{self.base}/cmd/{name}/result"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    def component_of_status(self, topic: str) -> str | None:
        """``facematch/dev/hub/status`` -> ``hub``; ``None`` for any other topic."""
        head, sep, tail = topic.rpartition("/")
        if not sep or tail != "status" or not head.startswith(self.base + "/"):
            return None
        return head[len(self.base) + 1 :] or None


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=parts.username,
            password=parts.password,
        )


def on_this_host(method: str) -> str:
    """An RPC method only workers on this machine may answer (its request names files in a local directory, such
    as an uploaded video in the spool): ``liveness`` -> ``liveness/<host name>``."""
    return f"{method}/{socket.gethostname()}"


# The RPC that scores a spooled challenge video.
LIVENESS_METHOD = on_this_host("liveness")

Handler = Callable[[mqtt.MQTTMessage], None]
RpcHandler = Callable[[dict[str, Any]], dict[str, Any]]


class Bus:
    """One MQTT v5 connection of one component, with its retained status and last will.

    The network loop runs in paho's thread; subscriptions are renewed on every reconnect, and paho retries the
    connection with exponential backoff (1 s up to 30 s) for as long as the bus is started.
    """

    def __init__(self, settings: Settings, component: str, *, url: str | None = None):
        self.settings = settings
        self.component = component
        self.topics = Topics.from_settings(settings)
        self.address = BrokerAddress.parse(url or settings.mqtt.url)
        self.client_id = f"{component}-{settings.device_id}-{uuid.uuid4().hex[:8]}"
        self._subscriptions: dict[str, tuple[str, int, Handler]] = {}
        self._pending: dict[bytes, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stopping = False
        self._reply_topic = self.topics.rpc_reply(self.client_id)
        self._client = self._make_client()

    # -- connection -------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        # The will must be set before connecting: the broker publishes it if this process dies.
        client.will_set(self.topics.status(self.component), OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, wait: float | None = None) -> bool:
        """Connect in the background; with ``wait``, block up to that many seconds for the connection."""
        self._client.connect_async(self.address.host, self.address.port, keepalive=self.settings.mqtt.keepalive)
        self._client.loop_start()
        if wait:
            return self._connected.wait(wait)
        return self.connected

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Say ``offline`` (retained), disconnect cleanly and stop the network thread."""
        self._stopping = True
        if self.connected:
            info = self._client.publish(self.topics.status(self.component), OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(BusUnavailable("bus stopped"))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any):
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.address.host, self.address.port, reason_code)
            return
        log.info("connected to broker %s:%s as %s", self.address.host, self.address.port, self.client_id)
        client.subscribe(self._reply_topic, options=SubscribeOptions(qos=1))
        with self._lock:
            subscriptions = list(self._subscriptions.values())
        for topic_filter, qos, _ in subscriptions:
            client.subscribe(topic_filter, options=SubscribeOptions(qos=qos))
        client.publish(self.topics.status(self.component), ONLINE, qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any):
        if self._connected.is_set() and not self._stopping:
            log.warning("disconnected from broker: %s (paho reconnects with backoff)", reason_code)
        self._connected.clear()

    # -- publish / subscribe ----------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str | dict[str, Any],
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        if isinstance(payload, dict):
            payload = json.dumps(payload, separators=(",", ":"))
        return self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Call ``handler(message)`` on paho's thread for each message matching ``topic_filter``.

        A shared subscription (``$share/group/filter``) is matched against its inner filter.
        """
        match_filter = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
        with self._lock:
            self._subscriptions[match_filter] = (topic_filter, qos, handler)
        if self.connected:
            self._client.subscribe(topic_filter, options=SubscribeOptions(qos=qos))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._reply_topic:
            self._on_reply(message)
            return
        with self._lock:
            handlers = [h for f, (_, _, h) in self._subscriptions.items() if mqtt.topic_matches_sub(f, message.topic)]
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                log.exception("handler for %s failed", message.topic)

    # -- RPC --------------------------------------------------------------------------------------------------

    def serve(self, method: str, handler: RpcHandler, executor: ThreadPoolExecutor) -> None:
        """Answer ``method`` requests (shared with every other worker) by running ``handler`` on ``executor``.

        ``handler`` takes the request's JSON and returns the result's JSON, or raises :class:`RemoteError`.
        """

        def on_request(message: mqtt.MQTTMessage) -> None:
            props = message.properties
            reply_to = getattr(props, "ResponseTopic", None)
            correlation = getattr(props, "CorrelationData", None)
            if not reply_to:
                log.warning("dropping %s request without a ResponseTopic", method)
                return
            executor.submit(self._answer, method, handler, message.payload, reply_to, correlation)

        self.subscribe(self.topics.rpc_shared(method), on_request, qos=1)

    def _answer(self, method: str, handler: RpcHandler, payload: bytes, reply_to: str, correlation: Any) -> None:
        try:
            request = json.loads(payload)
            if not isinstance(request, dict):
                raise RemoteError(400, "bad_request", "an RPC request must be a JSON object")
            reply: dict[str, Any] = {"ok": True, "result": handler(request)}
        except RemoteError as exc:
            reply = {"ok": False, "error": exc.to_dict()}
        except json.JSONDecodeError as exc:
            reply = {"ok": False, "error": RemoteError(400, "bad_request", f"request is not JSON: {exc}").to_dict()}
        except Exception as exc:
            log.exception("RPC %s failed", method)
            reply = {"ok": False, "error": RemoteError(500, "internal", f"{type(exc).__name__}: {exc}").to_dict()}
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        self.publish(reply_to, reply, qos=1, properties=props)

    def request(self, method: str, payload: dict[str, Any], timeout: float) -> Future[dict[str, Any]]:
        """Send a request; the future resolves to the result, or fails with RemoteError / RpcTimeout."""
        if not self.connected:
            raise BusUnavailable(f"MQTT broker {self.address.host}:{self.address.port} is not connected")
        correlation = uuid.uuid4().bytes
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._pending[correlation] = future
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self._reply_topic
        props.CorrelationData = correlation
        # A request nobody picked up in time is worthless: let the broker drop it rather than queue it.
        props.MessageExpiryInterval = max(1, int(timeout))
        self.publish(self.topics.rpc_request(method), payload, qos=1, properties=props)

        def expire() -> None:
            with self._lock:
                stale = self._pending.pop(correlation, None)
            if stale is not None and not stale.done():
                stale.set_exception(RpcTimeout(f"no inference worker answered {method!r} within {timeout:g} s"))

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        future.add_done_callback(lambda _: timer.cancel())
        return future

    def call(self, method: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self.request(method, payload, timeout).result()

    async def acall(self, method: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        return await asyncio.wrap_future(self.request(method, payload, timeout))

    def _on_reply(self, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        with self._lock:
            future = self._pending.pop(correlation, None) if correlation is not None else None
        if future is None or future.done():
            return  # a late reply to a request that already timed out
        try:
            reply = json.loads(message.payload)
        except json.JSONDecodeError:
            future.set_exception(RemoteError(502, "bad_reply", "worker sent a reply that is not JSON"))
            return
        if reply.get("ok"):
            future.set_result(reply.get("result") or {})
        else:
            error = reply.get("error") or {}
            detail = {k: v for k, v in error.items() if k not in ("status", "code", "message")}
            future.set_exception(
                RemoteError(
                    int(error.get("status", 500)),
                    str(error.get("code", "internal")),
                    str(error.get("message", "worker failed")),
                    detail,
                )
            )
