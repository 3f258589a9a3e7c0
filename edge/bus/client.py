"""The MQTT connection of one component: presence, subscriptions with their own threads, and typed RPC.

paho-mqtt 2.x, MQTT v5. paho's network thread only sorts incoming messages into per-subscription queues; handlers
run on each subscription's own thread, so a slow handler delays nobody else and never the keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import ValidationError

from edge import __version__
from edge.bus.messages import RPC_TYPES, ErrorBody, Payload, RpcReply, WorkerInfo
from edge.bus.topics import OFFLINE, ONLINE, Component, RpcMethod, Topics, rpc_route
from edge.config import Settings
from edge.errors import (
    BrokerUnavailable,
    ErrorCode,
    FacematchError,
    InferenceTimeout,
    InferenceUnavailable,
)

log = logging.getLogger(__name__)
# paho's own account of a lost connection (the socket error, an exception in a callback) is the only record of why it
# was lost; its per-packet debug lines are not wanted even when the rest of the process logs at DEBUG, ...
paho_log = logging.getLogger(f"{__name__}.paho")
paho_log.setLevel(logging.WARNING)
# ... but not its line on every reconnection attempt while the broker is away (_on_disconnect logs the loss once).
paho_log.addFilter(lambda record: not record.getMessage().startswith("Client is not connected"))

# The user property that carries an RPC request's deadline (epoch seconds): a worker drops a request that waited
# past it instead of working for a caller that has given up.
DEADLINE = "deadline"
# paho retries the connection with backoff between these bounds (seconds): short enough that a restarted broker is
# found again within a few seconds.
RECONNECT_MIN, RECONNECT_MAX = 0.5, 4
# A worker acknowledges a request as soon as it takes it (a reply with the user property ACK). A request that no
# worker took within ACK_TIMEOUT (it reached one that had just died), or whose worker went offline before answering,
# is sent once more; the second time it fails with inference_unavailable instead of waiting for its timeout.
ACK = "ack"
ACK_TIMEOUT = 3.0


@dataclass(frozen=True)
class Message:
    """One received message, in the product's own terms (no paho types)."""

    topic: str
    payload: bytes
    retain: bool = False
    user_properties: dict[str, str] = field(default_factory=dict)
    response_topic: str | None = None
    correlation: bytes | None = None
    received: float = field(default_factory=time.time)
    qos: int = 0  # as delivered: the lower of the publisher's and the subscription's

    @classmethod
    def from_paho(cls, message: mqtt.MQTTMessage) -> Message:
        props = message.properties
        return cls(
            topic=message.topic,
            payload=message.payload,
            retain=bool(message.retain),
            user_properties=dict(getattr(props, "UserProperty", None) or []),
            response_topic=getattr(props, "ResponseTopic", None),
            correlation=getattr(props, "CorrelationData", None),
            qos=int(message.qos),
        )

    def json(self) -> Any:
        return json.loads(self.payload)


Handler = Callable[[Message], None]


def _options(qos: int) -> SubscribeOptions:
    """Retain as published: a handler sees whether the sender retained a message even when it arrives live, so that
    a retained command (stale by definition) is told apart wherever it comes from, the bridge included."""
    return SubscribeOptions(qos=qos, retainAsPublished=True)


class Subscription:
    """One handler on one topic filter, fed by its own thread.

    ``latest_only`` keeps just the newest waiting message (camera frames: an old frame is worthless); otherwise up to
    ``maxsize`` wait and newer ones are dropped. Either way ``dropped`` counts what was never handled.
    """

    def __init__(self, bus: Bus, topic_filter: str, handler: Handler, qos: int, maxsize: int, latest_only: bool):
        self.topic_filter = topic_filter
        self.match_filter = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
        self.qos = qos
        self.dropped = 0
        self._bus = bus
        self._handler = handler
        self._queue: queue.Queue[Message | None] = queue.Queue(1 if latest_only else maxsize)
        self._latest_only = latest_only
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sub:{self.match_filter}", daemon=True)
        self._thread.start()

    def offer(self, message: Message) -> None:
        """Called on paho's thread: never blocks."""
        if self._latest_only:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
                self.dropped += 1
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("handler for %s is behind: %d messages dropped", self.match_filter, self.dropped)

    def _run(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self._handler(message)
            except Exception:
                log.exception("handler for %s failed", message.topic)

    def unsubscribe(self) -> None:
        """Stop delivering to this handler (the broker subscription ends with the filter's last handler)."""
        if self._closed:
            return
        self._closed = True
        self._bus._remove(self)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._queue.full():  # latest-only, or a full queue: make room for the sentinel
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    __call__ = unsubscribe


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

    def __str__(self) -> str:
        """host:port, never the credentials."""
        return f"{self.host}:{self.port}"


ResultT = TypeVar("ResultT", bound=Payload)


@dataclass
class _Pending:
    """A request sent and not yet answered."""

    future: Future[Any]
    result_type: type[Payload]
    route: str
    resend: Callable[[], None]
    instance: str | None = None  # the worker that acknowledged it
    attempts: int = 1
    ack_timer: threading.Timer | None = None


class Bus:
    """One MQTT v5 connection of one instance of a component, with its retained presence and last will."""

    def __init__(
        self, settings: Settings, component: Component, *, instance: str | None = None, url: str | None = None
    ):
        self.settings = settings
        self.component = Component(component)
        self.instance = instance or settings.instance_id
        self.topics = Topics.from_settings(settings)
        self._url = url or settings.mqtt.url
        self.address = BrokerAddress.parse(self._url)
        self.client_id = f"{self.component.value}-{settings.device_id}-{uuid.uuid4().hex[:8]}"
        self._subscriptions: list[Subscription] = []
        self._routes: list[str] = []
        self._retained: dict[str, bytes] = {}  # re-published on every connect (a broker restart forgets them)
        self._pending: dict[bytes, _Pending] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._started = False
        self._stopping = False
        self._reply_topic = self.topics.rpc_reply(self.client_id)
        self._status_topic = self.topics.status(self.component, self.instance)
        self._client = self._make_client()

    # -- connection -------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.enable_logger(paho_log)
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        # The will must be set before connecting: the broker publishes it if this process dies.
        client.will_set(self._status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN, max_delay=RECONNECT_MAX)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, wait: float | None = None) -> bool:
        """Connect in the background; with ``wait``, block up to that many seconds for the connection. Starting a
        started bus only waits: connecting again would drop the live connection under its network thread."""
        if self._started:
            return self._connected.wait(wait) if wait else self.connected
        self._started = True
        self._refresh_login()
        self._client.connect_async(self.address.host, self.address.port, keepalive=self.settings.mqtt.keepalive)
        self._client.loop_start()
        if wait:
            return self._connected.wait(wait)
        return self.connected

    def _refresh_login(self) -> None:
        """This component's login for the broker `facematch up` runs, read again before every attempt: a process
        started before `up` wrote it (or after a `credentials rotate`) gets it on its next try."""
        from edge.credentials import mqtt_login  # here, not at the top: edge.credentials imports edge.bus

        if not self.address.username and (login := mqtt_login(self.settings, self.component, self._url)):
            self._client.username_pw_set(*login)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Say ``offline`` (retained), disconnect cleanly, stop the network thread and every handler thread."""
        self._stopping = True
        if self.connected:
            info = self._client.publish(self._status_topic, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        for subscription in list(self._subscriptions):
            subscription.unsubscribe()
        self._fail_pending(BrokerUnavailable("the bus was stopped"))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any):
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.address, reason_code)
            self._refresh_login()
            return
        log.info("connected to broker %s as %s", self.address, self.client_id)
        client.subscribe(self._reply_topic, options=SubscribeOptions(qos=1))
        with self._lock:
            filters = {s.topic_filter: s.qos for s in self._subscriptions}
        for topic_filter, qos in filters.items():
            client.subscribe(topic_filter, options=_options(qos))
        self._publish_presence(client)
        self._connected.set()

    def _publish_presence(self, client: mqtt.Client) -> None:
        info = WorkerInfo(
            component=self.component, instance=self.instance, host=self.settings.host_id, routes=list(self._routes),
            version=__version__, pid=os.getpid(), started_at=time.time(),
        )  # fmt: skip
        client.publish(self.topics.info(self.component, self.instance), info.to_bytes(), qos=1, retain=True)
        client.publish(self._status_topic, ONLINE, qos=1, retain=True)
        for topic, payload in list(self._retained.items()):
            client.publish(topic, payload, qos=1, retain=True)

    def keep_retained(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` retained on ``topic`` now (when connected) and again on every reconnect."""
        self._retained[topic] = payload
        if self.connected:
            self._client.publish(topic, payload, qos=1, retain=True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any):
        if self._connected.is_set() and not self._stopping:
            log.warning("disconnected from broker %s: %s (reconnecting)", self.address, reason_code)
        self._connected.clear()
        self._refresh_login()
        # Replies to requests sent before the disconnect can no longer arrive: fail them now, not at their timeout.
        self._fail_pending(BrokerUnavailable(f"lost the connection to the MQTT broker {self.address}"))

    def _fail_pending(self, error: FacematchError) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.ack_timer:
                entry.ack_timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(error)

    # -- publish / subscribe ----------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str | Payload,
        qos: int = 0,
        retain: bool = False,
        user_properties: dict[str, str] | None = None,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry: float | None = None,
    ) -> mqtt.MQTTMessageInfo:
        if isinstance(payload, Payload):
            payload = payload.to_bytes()
        props = None
        if user_properties or response_topic or correlation is not None or expiry:
            props = Properties(PacketTypes.PUBLISH)
            if user_properties:
                props.UserProperty = [(str(k), str(v)) for k, v in user_properties.items()]
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
            if expiry:
                props.MessageExpiryInterval = max(1, int(expiry + 0.999))
        return self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def subscribe(
        self, topic_filter: str, handler: Handler, qos: int = 1, *, maxsize: int = 100, latest_only: bool = False
    ) -> Subscription:
        """Deliver each message matching ``topic_filter`` to ``handler`` on the subscription's own thread.

        Several handlers may share a filter. A shared subscription (``$share/group/filter``) is matched against its
        inner filter. Returns the handle whose ``unsubscribe()`` (or call) ends it.
        """
        subscription = Subscription(self, topic_filter, handler, qos, maxsize, latest_only)
        with self._lock:
            first = all(s.topic_filter != topic_filter for s in self._subscriptions)
            self._subscriptions.append(subscription)
        if first and self.connected:
            self._client.subscribe(topic_filter, options=_options(qos))
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
            last = all(s.topic_filter != subscription.topic_filter for s in self._subscriptions)
        if last and self.connected:
            self._client.unsubscribe(subscription.topic_filter)

    def _on_message(self, client: mqtt.Client, userdata: Any, paho_message: mqtt.MQTTMessage) -> None:
        message = Message.from_paho(paho_message)
        if message.topic == self._reply_topic:
            self._on_reply(message)
            return
        with self._lock:
            targets = [s for s in self._subscriptions if mqtt.topic_matches_sub(s.match_filter, message.topic)]
        for subscription in targets:
            subscription.offer(message)

    def _host_for(self, method: RpcMethod, host: str | None) -> str | None:
        """The host a method is addressed to: a host-scoped one defaults to this host, others have none."""
        return (host or self.settings.host_id) if method.host_scoped else None

    # -- RPC: serving -----------------------------------------------------------------------------------------

    def serve(
        self,
        method: RpcMethod,
        handler: Callable[[Any], Payload],
        executor: ThreadPoolExecutor,
        *,
        host: str | None = None,
    ) -> Subscription:
        """Answer ``method`` requests (shared with every other worker) by running ``handler`` on ``executor``.

        ``handler`` takes the method's request model and returns its result model, or raises a
        :class:`FacematchError`. A host-scoped method is served for ``host`` (default: this host).
        """
        host = self._host_for(method, host)
        route = rpc_route(method, host)
        request_type, _ = RPC_TYPES[method]

        def on_request(message: Message) -> None:
            if not message.response_topic:
                log.warning("dropping a %s request without a ResponseTopic", route)
                return
            # Taken: tell the caller who has it, so that it can act at once if this worker dies.
            self.publish(message.response_topic, b"", qos=1, correlation=message.correlation,
                         user_properties={ACK: f"{self.component.value}/{self.instance}"})  # fmt: skip
            executor.submit(self._answer, route, request_type, handler, message)

        self._routes.append(route)
        subscription = self.subscribe(self.topics.rpc_shared(method, host), on_request, qos=1, maxsize=1000)
        if self.connected:
            self._publish_presence(self._client)
        return subscription

    def _answer(self, route: str, request_type: type[Payload], handler: Callable[[Any], Payload], message: Message):
        deadline = message.user_properties.get(DEADLINE)
        with contextlib.suppress(ValueError):
            if deadline is not None and time.time() > float(deadline):
                log.warning("dropping a %s request that waited past its deadline", route)
                return
        try:
            request = request_type.model_validate_json(message.payload)
            reply = RpcReply(ok=True, result=handler(request).model_dump(), instance=self.instance)
        except FacematchError as exc:
            reply = RpcReply(ok=False, error=ErrorBody(**exc.to_dict()), instance=self.instance)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            error = FacematchError(f"the {route} request is malformed: {problems}", ErrorCode.BAD_REQUEST)
            reply = RpcReply(ok=False, error=ErrorBody(**error.to_dict()), instance=self.instance)
        except Exception:
            log.exception("RPC %s failed", route)
            error = FacematchError(f"the inference worker failed on {route} (see its log)", ErrorCode.INTERNAL)
            reply = RpcReply(ok=False, error=ErrorBody(**error.to_dict()), instance=self.instance)
        assert message.response_topic is not None
        self.publish(message.response_topic, reply, qos=1, correlation=message.correlation)

    # -- RPC: calling -----------------------------------------------------------------------------------------

    def request(self, method: RpcMethod, payload: Payload, timeout: float, *, host: str | None = None) -> Future[Any]:
        """Send a request; the future resolves to the method's result model, or fails with a FacematchError
        (the worker's own error, ``inference_timeout``, ``bad_reply``, or ``broker_unavailable``)."""
        if not self.connected:
            raise BrokerUnavailable(f"the MQTT broker {self.address} is not connected")
        host = self._host_for(method, host)
        route = rpc_route(method, host)
        request_type, result_type = RPC_TYPES[method]
        if not isinstance(payload, request_type):
            raise TypeError(f"{route} takes a {request_type.__name__}, not a {type(payload).__name__}")
        correlation = uuid.uuid4().bytes
        future: Future[Any] = Future()
        deadline = {DEADLINE: f"{time.time() + timeout:.3f}"}
        body = payload.to_bytes()

        def send() -> None:
            self.publish(
                self.topics.rpc_request(method, host), body, qos=1, user_properties=deadline,
                response_topic=self._reply_topic, correlation=correlation, expiry=timeout,
            )  # fmt: skip
            self._arm_ack_timer(correlation, min(ACK_TIMEOUT, timeout))

        with self._lock:
            self._pending[correlation] = _Pending(future, result_type, route, send)
        send()

        def expire() -> None:
            with self._lock:
                stale = self._pending.pop(correlation, None)
            if stale is not None and not stale.future.done():
                stale.future.set_exception(
                    InferenceTimeout(f"no inference worker answered {route!r} within {timeout:g} s")
                )

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        future.add_done_callback(lambda _: timer.cancel())
        return future

    def _arm_ack_timer(self, correlation: bytes, after: float) -> None:
        with self._lock:
            entry = self._pending.get(correlation)
            if entry is None:
                return
            if entry.ack_timer:
                entry.ack_timer.cancel()
            entry.ack_timer = threading.Timer(after, self._retry_or_fail, (correlation, "no inference worker took it"))
            entry.ack_timer.daemon = True
            entry.ack_timer.start()

    def _retry_or_fail(self, correlation: bytes, why: str) -> None:
        """The request's worker is gone (or none took it): send it once more, then give up with a 503."""
        with self._lock:
            entry = self._pending.get(correlation)
            if entry is None or entry.future.done():
                return
            give_up = entry.attempts >= 2
            if give_up:
                del self._pending[correlation]
            else:
                entry.attempts += 1
                entry.instance = None
        if give_up:
            if entry.ack_timer:
                entry.ack_timer.cancel()
            entry.future.set_exception(InferenceUnavailable(f"the {entry.route} request was lost twice: {why}"))
            return
        log.warning("re-sending a %s request: %s", entry.route, why)
        entry.resend()

    def instance_gone(self, component: Component, instance: str) -> None:
        """Called when an instance goes offline: the requests it had taken are re-sent or failed now."""
        who = f"{component.value}/{instance}"
        with self._lock:
            lost = [c for c, e in self._pending.items() if e.instance == who]
        for correlation in lost:
            self._retry_or_fail(correlation, f"the worker {who} stopped while working on it")

    def call(self, method: RpcMethod, payload: Payload, timeout: float, *, host: str | None = None) -> Any:
        return self.request(method, payload, timeout, host=host).result()

    async def acall(self, method: RpcMethod, payload: Payload, timeout: float, *, host: str | None = None) -> Any:
        return await asyncio.wrap_future(self.request(method, payload, timeout, host=host))

    def _on_reply(self, message: Message) -> None:
        if message.correlation is None:
            return
        acknowledged_by = message.user_properties.get(ACK)
        with self._lock:
            if acknowledged_by is not None:
                entry = self._pending.get(message.correlation)
                if entry is not None:
                    entry.instance = acknowledged_by
                    if entry.ack_timer:
                        entry.ack_timer.cancel()
                return
            entry = self._pending.pop(message.correlation, None)
        if entry is None or entry.future.done():
            return  # a late reply to a request that already timed out
        if entry.ack_timer:
            entry.ack_timer.cancel()
        future, result_type = entry.future, entry.result_type
        try:
            reply = RpcReply.model_validate_json(message.payload)
            if reply.ok:
                future.set_result(result_type.model_validate(reply.result or {}))
            else:
                error = reply.error.model_dump() if reply.error else {"code": ErrorCode.BAD_REPLY.value}
                future.set_exception(FacematchError.from_dict(error))
        except ValidationError as exc:
            message_text = f"an inference worker sent an invalid reply: {exc.errors()[0]['msg']}"
            future.set_exception(FacematchError(message_text, ErrorCode.BAD_REPLY))
