"""``facematch bench fleet``: the central broker's side of a fleet, on loopback.

- ``--devices`` simulated devices (lightweight MQTT clients: each keeps its retained presence and answers ``ping`` as
  a device's hub does) on one central Mosquitto: how long ``facematch fleet devices`` takes to list them all, and the
  round trip of ``ping`` through the central broker.
- One real bridge (a device's Mosquitto, as ``facematch up`` configures it) publishing QoS 1 events while the central
  broker is killed and restarted, and while the device's own broker is restarted: events lost, counted end to end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.bench.result import BenchResult
from edge.bus.messages import AccessEvent, CommandResult, WorkerInfo
from edge.config import Settings, load_settings


class FleetBenchResult(BenchResult):
    devices: int
    listed: int
    list_seconds: float
    pings: int
    ping_p50_ms: float
    ping_p95_ms: float
    events_sent: int
    events_received: int
    outage_seconds: float

    def report(self) -> str:
        return "\n".join([
            f"{self.listed} of {self.devices} simulated devices listed in {self.list_seconds:.2f} s (target: all "
            "within 2 s)",
            f"ping through the central broker: p50 {self.ping_p50_ms:.1f} ms, p95 {self.ping_p95_ms:.1f} ms over "
            f"{self.pings} (target p95 <= 200 ms)",
            f"QoS 1 events across a {self.outage_seconds:g} s central outage and a restart of the device's broker: "
            f"{self.events_received} of {self.events_sent} arrived, {self.events_sent - self.events_received} lost "
            "(target 0)",
        ])  # fmt: skip


def _client(port: int, name: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


class SimulatedDevice:
    """A device as the central broker sees it: retained presence, and ``ping`` answered with its id."""

    def __init__(self, port: int, device: str):
        self.device = device
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{device}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_command
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"facematch/{device}/cmd/ping", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        info = WorkerInfo(component="hub", instance=device, host=device, version="sim", pid=0, started_at=time.time())
        self.client.publish(f"facematch/{device}/hub/{device}/status", "online", qos=1, retain=True)
        self.client.publish(f"facematch/{device}/hub/{device}/info", info.to_bytes(), qos=1, retain=True)

    def _on_command(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = getattr(message.properties, "CorrelationData", b"")
        result = CommandResult(ok=True, result={"device_id": self.device})
        client.publish(f"facematch/{self.device}/cmd/ping/result", result.to_bytes(), qos=1, properties=props)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("fleet", help="the central broker: listing devices, command round trips, event loss")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the central broker is down")
    parser.add_argument("--events", type=int, default=200)
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> FleetBenchResult:
    from edge.fleet.tool import Fleet
    from edge.services import free_port, mosquitto_service

    with tempfile.TemporaryDirectory(prefix="facematch-fleet-") as tmp:
        central = mosquitto_service(free_port(), Path(tmp) / "central").start()
        simulated = [SimulatedDevice(central.port, f"sim-{i:03d}") for i in range(args.devices)]
        try:
            time.sleep(0.5)
            url = f"mqtt://127.0.0.1:{central.port}"
            with Fleet(url) as fleet:
                started = time.perf_counter()
                listed: dict = {}
                while len(listed) < args.devices and time.perf_counter() - started < 10:
                    listed = fleet.devices(wait=0.25)
                list_seconds = time.perf_counter() - started
            timings = _pings(central.port, [d.device for d in simulated], args.pings)
            sent, received = _outage(central, Path(tmp), args.events, args.outage, free_port, mosquitto_service)
        finally:
            for device in simulated:
                device.close()
            central.stop()
    trips = timings or [float("nan")]
    return FleetBenchResult(
        devices=args.devices, listed=len(listed), list_seconds=list_seconds, pings=len(timings),
        ping_p50_ms=1000 * statistics.median(trips), ping_p95_ms=1000 * float(np.percentile(trips, 95)),
        events_sent=sent, events_received=received, outage_seconds=args.outage,
    )  # fmt: skip


def _pings(port: int, devices: list[str], count: int) -> list[float]:
    """Round trips of ``ping`` (publish → the device's result), one at a time, as the fleet tool sends them."""
    arrived: dict[bytes, float] = {}
    done = threading.Condition()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with done:
            arrived[getattr(message.properties, "CorrelationData", b"")] = time.perf_counter()
            done.notify_all()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-fleet", protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe("facematch/+/cmd/ping/result", qos=1)
    time.sleep(0.3)
    timings = []
    try:
        for i in range(count):
            correlation = uuid.uuid4().bytes
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
            began = time.perf_counter()
            client.publish(f"facematch/{devices[i % len(devices)]}/cmd/ping", b"{}", qos=1, properties=props)
            with done:
                if done.wait_for(lambda c=correlation: c in arrived, timeout=5):
                    timings.append(arrived[correlation] - began)
    finally:
        client.loop_stop()
        client.disconnect()
    return timings


def _outage(central, tmp: Path, events: int, outage: float, free_port, mosquitto_service) -> tuple[int, int]:
    """A device's broker bridged to ``central``; events published before, during and after a central outage and a
    restart of the device's broker; how many of them the central side received."""
    from edge.fleet.bridge import bridge_lines

    local_port = free_port()
    settings = load_settings(environ={"DEVICE_ID": "bench-door", "MQTT_URL": f"mqtt://127.0.0.1:{local_port}",
                                      "CENTRAL_MQTT_URL": f"mqtt://127.0.0.1:{central.port}"})  # fmt: skip
    local = mosquitto_service(local_port, tmp / "device", bridge=bridge_lines(settings, None)).start()
    seen: set[str] = set()
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with lock:
            seen.add(AccessEvent.model_validate_json(message.payload).event_id)

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-watcher", protocol=mqtt.MQTTv5)
    watcher.on_message = on_message
    watcher.on_connect = lambda c, u, f, rc, p: c.subscribe("facematch/bench-door/events/#", qos=1)
    watcher.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # back on the central broker before the bridge is
    watcher.connect("127.0.0.1", central.port)
    watcher.loop_start()
    sent: list[str] = []

    def publish(count: int) -> None:
        publisher = _client(local_port, f"bench-publisher-{uuid.uuid4().hex[:6]}")
        for _ in range(count):
            event = AccessEvent(device_id="bench-door", decision="unknown")
            sent.append(event.event_id)
            publisher.publish("facematch/bench-door/events/access", event.to_bytes(), qos=1).wait_for_publish(5)
        publisher.loop_stop()
        publisher.disconnect()

    try:
        time.sleep(1.5)
        third = events // 3
        publish(third)
        central.process.kill()
        central.process.wait()
        publish(third)  # queued on the device while the central broker is down
        time.sleep(outage)
        local.stop()  # the device's broker restarts too, with the queue on disk
        local.start()
        central.start()
        publish(events - 2 * third)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if set(sent) <= seen:
                    break
            time.sleep(0.2)
        with lock:
            return len(sent), len(set(sent) & seen)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        local.stop()
