"""Two devices (two `facematch up`, each with its own Mosquitto) bridged to a central Mosquitto, all real processes on
loopback: devices listed centrally, commands reaching the right device with one result each, events arriving
centrally and none lost across a central-link outage, retained commands ignored, commands from a local component
refused."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.bus import Bus, Component, EventKind
from edge.bus.messages import AccessEvent, FleetCommand
from edge.config import load_settings
from edge.fleet.tool import Fleet
from edge.services import free_port, mosquitto_service
from tests.conftest import PROJECT_ROOT, wait_healthy

DEVICES = ("door-a", "door-b")


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    # Persistent, as a fleet's central broker is: a consumer's session (and what is queued for it) outlives a restart.
    service = mosquitto_service(free_port(), tmp_path_factory.mktemp("central"), persistent=True).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def devices(central, tmp_path_factory, model_settings):
    started = {}
    for device in DEVICES:
        state = tmp_path_factory.mktemp(device)
        port = free_port()
        env = {
            **os.environ, "PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "MQTT_URL": f"mqtt://127.0.0.1:{free_port()}", "FACEMATCH_STATE_DIR": str(state),
            "FACEMATCH_API_KEYS": secrets.token_urlsafe(12), "FACEMATCH_API_KEYS_FILE": str(state / "none.json"),
            "DEVICE_ID": device, "CENTRAL_MQTT_URL": f"mqtt://127.0.0.1:{central.port}",
            "FACEMATCH_CAMERA__SOURCE": "none",
        }  # fmt: skip
        started[device] = (subprocess.Popen([sys.executable, "-m", "edge.cli", "up"], env=env, cwd=PROJECT_ROOT),
                           port, env)  # fmt: skip
    try:
        for process, port, _ in started.values():
            wait_healthy(f"http://127.0.0.1:{port}", process)
        yield {device: load_settings(environ=env) for device, (_, _, env) in started.items()}
    finally:
        for process, _, _ in started.values():
            process.send_signal(signal.SIGTERM)
        for process, _, _ in started.values():
            process.wait(30)


def central_url(central) -> str:
    return f"mqtt://127.0.0.1:{central.port}"


def test_the_fleet_lists_devices_and_each_device_answers_its_own_command_once(central, devices):
    with Fleet(central_url(central)) as fleet:
        deadline = time.monotonic() + 15
        seen = {}
        while time.monotonic() < deadline and not all(d in seen and "hub/" in str(seen[d]) for d in DEVICES):
            seen = fleet.devices(wait=1.0)
        assert set(DEVICES) <= set(seen), seen
        assert any(entry.get("status") == "online" for key, entry in seen["door-a"].items() if key.startswith("hub/"))
        results = fleet.send("ping", list(DEVICES), timeout=10)
        assert {d: r.ok and r.result["device_id"] for d, r in results.items()} == {d: d for d in DEVICES}
        unknown = fleet.send("no-such-command", ["door-a"], timeout=10)["door-a"]
        assert unknown is not None and not unknown.ok and unknown.error.code == "unknown_command"
        audit = fleet.send("audit", ["door-b"], {"count": 5}, timeout=10)["door-b"]
        assert audit is not None and audit.ok and audit.result["entries"] == []


def test_retained_commands_and_commands_from_a_local_component_are_ignored(central, devices):
    settings = devices["door-a"]
    results: queue.Queue = queue.Queue()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, m: results.put(m)
    watcher.connect("127.0.0.1", central.port)
    watcher.loop_start()
    watcher.subscribe("facematch/door-a/cmd/ping/result", qos=1)
    time.sleep(0.3)
    try:
        watcher.publish("facematch/door-a/cmd/ping", FleetCommand().to_bytes(), qos=1, retain=True)
        with pytest.raises(queue.Empty):
            results.get(timeout=2)
        watcher.publish("facematch/door-a/cmd/ping", b"", qos=1, retain=True)  # clear it
        camera = Bus(settings, Component.CAMERA)  # a local component, with its own login on the device's broker
        assert camera.start(wait=5)
        camera.publish(camera.topics.command("ping"), FleetCommand().to_bytes(), qos=1)
        with pytest.raises(queue.Empty):
            results.get(timeout=2)  # the device's ACL dropped it: only the bridge brings commands in
        camera.stop()
    finally:
        watcher.loop_stop()
        watcher.disconnect()


def test_events_reach_the_central_broker_and_none_is_lost_across_an_outage(central, devices):
    settings = devices["door-b"]
    received: queue.Queue = queue.Queue()
    # A fleet consumer keeps a session on the central broker, so what the bridge delivers while the consumer is still
    # reconnecting after the outage waits for it there (without one, the test would race the bridge's reconnection).
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-test-consumer", protocol=mqtt.MQTTv5)
    subscriber.on_message = lambda c, u, m: received.put(m.payload)
    subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe("facematch/door-b/events/#", qos=1)
    subscriber.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 600
    subscriber.connect("127.0.0.1", central.port, clean_start=False, properties=session)
    subscriber.loop_start()
    worker = Bus(settings, Component.INFERENCE)  # the door flow's login: it publishes the events
    assert worker.start(wait=5)
    sent: set[str] = set()

    def publish(count: int) -> None:
        for _ in range(count):
            event = AccessEvent(device_id="door-b", decision="unknown")
            sent.add(event.event_id)
            worker.publish(worker.topics.event(EventKind.ACCESS), event.to_bytes(), qos=1)

    def collect(expected: set[str], timeout: float) -> set[str]:
        """The expected events that arrived (QoS 1 is at least once: a repeat of an earlier one is not counted)."""
        got: set[str] = set()
        deadline = time.monotonic() + timeout
        while not expected <= got and time.monotonic() < deadline:
            try:
                event_id = AccessEvent.model_validate_json(received.get(timeout=0.5)).event_id
                if event_id in expected:
                    got.add(event_id)
            except queue.Empty:
                continue
        return got

    try:
        time.sleep(0.5)
        publish(10)
        before = collect(set(sent), 10)
        assert before == sent, f"{len(before)} of {len(sent)} events arrived"
        central.stop()  # the central link goes down for 30 s (a clean stop, so the broker keeps the consumer's session)
        publish(25)  # queued by the device's broker meanwhile
        time.sleep(30)
        central.start()
        after = collect(sent - before, 60)
        assert after == sent - before, f"{len(after)} of 25 events queued during the outage arrived"
        # Both links come back (each bridge retries on its own backoff, up to 30 s apart), so the fleet reaches both
        # devices again; the tests after this one rely on it.
        assert_reachable(central, DEVICES, within=75)
    finally:
        worker.stop()
        subscriber.loop_stop()
        subscriber.disconnect()


def assert_reachable(central, devices: tuple[str, ...], within: float) -> None:
    """Each device answers a ping over its bridge within ``within`` seconds."""
    waiting = set(devices)
    deadline = time.monotonic() + within
    with Fleet(central_url(central)) as fleet:
        while waiting and time.monotonic() < deadline:
            answered = fleet.send("ping", sorted(waiting), timeout=3)
            waiting -= {device for device, result in answered.items() if result is not None and result.ok}
    assert not waiting, f"no answer over the bridge from {sorted(waiting)} within {within:g} s of the outage"


# Home Assistant's documented MQTT discovery keys for these two platforms (integrations/sensor.mqtt and
# binary_sensor.mqtt), and the device registry's keys: anything else would be ignored or refused by Home Assistant.
HA_COMMON = {"name", "unique_id", "state_topic", "value_template", "json_attributes_topic", "icon", "device",
             "availability_topic", "payload_available", "payload_not_available", "device_class"}  # fmt: skip
HA_ONLY = {"sensor": set(), "binary_sensor": {"off_delay", "payload_on", "payload_off"}}
HA_DEVICE = {"identifiers", "name", "manufacturer", "model", "sw_version"}
BINARY_DEVICE_CLASSES = {"door", "lock", "occupancy", "presence", "problem", "safety", "motion", "opening"}


def test_home_assistant_discovery_follows_its_documented_schema(tmp_path):
    from edge.fleet.homeassistant import discovery_messages

    settings = load_settings(environ={"DEVICE_ID": "front-door.1", "FACEMATCH_MQTT__HOME_ASSISTANT": "true"})
    messages = discovery_messages(settings)
    assert len(messages) == 2 and len({m["unique_id"] for m in messages.values()}) == 2
    for topic, config in messages.items():
        prefix, platform, node, object_id, last = topic.split("/")
        assert prefix == "homeassistant" and last == "config" and platform in HA_ONLY
        assert node == "facematch_front_door_1" and object_id.replace("_", "").isalnum()  # [a-zA-Z0-9_-] only
        assert set(config) <= HA_COMMON | HA_ONLY[platform], set(config) - HA_COMMON - HA_ONLY[platform]
        assert {"name", "unique_id", "state_topic"} <= set(config)
        assert "+" not in config["state_topic"] and "#" not in config["state_topic"]
        assert config["state_topic"] == "facematch/front-door.1/events/access"
        assert config["availability_topic"].endswith("/status") and set(config["device"]) <= HA_DEVICE
        if platform == "binary_sensor":
            assert config["device_class"] in BINARY_DEVICE_CLASSES and config["off_delay"] > 0
    # The templates render what Home Assistant would show, with the event a grant produces.
    import jinja2

    grant = {"decision": "granted", "name": "Ada"}
    sensor = next(c for t, c in messages.items() if "/sensor/" in t)
    binary = next(c for t, c in messages.items() if "/binary_sensor/" in t)
    assert jinja2.Template(sensor["value_template"]).render(value_json=grant) == "Ada"
    assert jinja2.Template(sensor["value_template"]).render(value_json={"decision": "unknown"}) == "unknown"
    assert jinja2.Template(binary["value_template"]).render(value_json=grant) == "ON"


def test_home_assistant_discovery_reaches_the_central_broker(central, devices):
    # door-a runs without discovery (the default); its bridge may carry discovery but none is published.
    from edge.fleet.homeassistant import payloads

    settings = devices["door-a"].model_copy(update={"mqtt": devices["door-a"].mqtt.model_copy(
        update={"home_assistant": True})})  # fmt: skip
    hub = Bus(settings, Component.HUB)  # the hub's login on door-a's broker, as the hub publishes it
    for topic, payload in payloads(settings).items():
        hub.keep_retained(topic, payload)
    assert hub.start(wait=5)
    seen: queue.Queue = queue.Queue()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, m: seen.put(m.topic)
    watcher.connect("127.0.0.1", central.port)
    watcher.loop_start()
    try:
        deadline = time.monotonic() + 10
        topics: set[str] = set()
        while len(topics) < 2 and time.monotonic() < deadline:
            watcher.subscribe("homeassistant/+/facematch_door_a/+/config", qos=1)
            try:
                topics.add(seen.get(timeout=1))
            except queue.Empty:
                continue
        assert topics == set(payloads(settings)), topics
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        hub.stop()


def test_one_gallery_is_enrolled_on_one_door_and_pushed_to_another(central, devices, faces_dir):
    import base64

    photo = base64.b64encode(sorted((faces_dir / "lfw_official/images/Hans_Blix").glob("*.jpg"))[0].read_bytes())
    with Fleet(central_url(central)) as fleet:
        enrolled = fleet.send("subjects-enroll", ["door-a"], {"name": "Hans Blix", "photos": [photo.decode()]},
                              timeout=30)["door-a"]  # fmt: skip
        assert enrolled is not None and enrolled.ok, enrolled
        assert enrolled.result["faces"] == 1
        subject_id = enrolled.result["subject_id"]
        exported = fleet.send("gallery-export", ["door-a"], timeout=15)["door-a"]
        assert exported is not None and exported.ok and exported.result["subjects"] == 1
        pushed = fleet.send("gallery-import", ["door-b"], {"archive": exported.result["archive"]}, timeout=15)["door-b"]
        assert pushed is not None and pushed.ok and pushed.result["subjects"] == 1
        listed = fleet.send("subjects-list", ["door-b"], timeout=10)["door-b"]
        assert [s["subject_id"] for s in listed.result["subjects"]] == [subject_id]
        bad = fleet.send("gallery-import", ["door-b"], {"archive": "not base64!"}, timeout=10)["door-b"]
        assert bad is not None and not bad.ok and bad.error.code == "bad_request"


def test_config_set_is_validated_and_kept_and_restart_restarts_a_component(central, devices):
    from edge.config import FLEET_OVERRIDES

    settings = devices["door-a"]
    with Fleet(central_url(central)) as fleet:
        changed = fleet.send("config-set", ["door-a"], {"values": {"door.unlock_seconds": 8}}, timeout=10)["door-a"]
        assert changed is not None and changed.ok and changed.result["changed"] == ["door.unlock_seconds"]
        kept = settings.paths.state_dir / FLEET_OVERRIDES
        assert "unlock_seconds: 8" in kept.read_text()
        env = {"FACEMATCH_STATE_DIR": str(settings.paths.state_dir)}
        assert load_settings(environ=env).door.unlock_seconds == 8  # what a restarted component reads
        for values, why in (({"door.unlock_seconds": -1}, "greater than 0"), ({"mqtt.url": "mqtt://x"}, "device")):
            refused = fleet.send("config-set", ["door-a"], {"values": values}, timeout=10)["door-a"]
            assert refused is not None and not refused.ok and why in refused.error.message
        assert "unlock_seconds: 8" in kept.read_text()  # a refused change leaves the file as it was
        restarted = fleet.send("restart", ["door-a"], {"component": "camera"}, timeout=15)["door-a"]
        assert restarted is not None and restarted.ok and restarted.result == {"restarted": "camera"}
        unknown = fleet.send("restart", ["door-a"], {"component": "redis"}, timeout=10)["door-a"]
        assert unknown is not None and not unknown.ok
