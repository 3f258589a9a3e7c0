import json
import queue
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from edge.bus import OFFLINE, ONLINE, Bus, BusUnavailable, RemoteError, RpcTimeout, Topics
from edge.config import load_settings


@pytest.fixture
def buses(settings):
    started: list[Bus] = []

    def make(component: str) -> Bus:
        bus = Bus(settings, component)
        started.append(bus)
        return bus

    yield make
    for bus in started:
        bus.stop()


def collect(bus: Bus, topic_filter: str) -> "queue.Queue":
    inbox: queue.Queue = queue.Queue()
    bus.subscribe(topic_filter, lambda m: inbox.put((m.topic, m.payload, m.retain)))
    return inbox


def test_topics_are_built_from_prefix_and_device():
    topics = Topics("facematch", "door-1")
    assert topics.status("camera") == "facematch/door-1/camera/status"
    assert topics.rpc_request("match") == "facematch/door-1/rpc/match/request"
    assert topics.rpc_shared("match") == "$share/inference/facematch/door-1/rpc/match/request"
    assert topics.event("access") == "facematch/door-1/events/access"
    assert topics.door_command == "facematch/door-1/door/command"
    assert topics.command_result("ping") == "facematch/door-1/cmd/ping/result"
    assert topics.component_of_status("facematch/door-1/inference/status") == "inference"
    assert topics.component_of_status("facematch/door-2/inference/status") is None
    with pytest.raises(ValueError):
        topics.event("nonsense")
    # The spool-reading RPC is scoped to this machine's workers.
    import socket

    from edge.bus import LIVENESS_METHOD

    assert topics.rpc_request(LIVENESS_METHOD) == f"facematch/door-1/rpc/liveness/{socket.gethostname()}/request"


def test_publish_subscribe_and_retained_online_status(buses):
    listener = buses("listener")
    assert listener.start(wait=5)
    inbox = collect(listener, listener.topics.all_status)
    talker = buses("talker")
    assert talker.start(wait=5)
    deadline = time.monotonic() + 5
    seen = {}
    while time.monotonic() < deadline and seen.get("talker") != ONLINE:
        topic, payload, _ = inbox.get(timeout=5)
        seen[listener.topics.component_of_status(topic)] = payload.decode()
    assert seen["talker"] == ONLINE

    events = collect(listener, listener.topics.event("match"))
    time.sleep(0.2)  # let the subscription reach the broker
    talker.publish(talker.topics.event("match"), {"subject": "alice"}, qos=1)
    topic, payload, _ = events.get(timeout=5)
    assert json.loads(payload) == {"subject": "alice"}


def test_last_will_says_offline_when_a_client_is_killed(buses, settings):
    script = textwrap.dedent(
        """
        import sys, time
        from edge.bus import Bus
        from edge.config import load_settings
        bus = Bus(load_settings(environ={"MQTT_URL": sys.argv[1], "DEVICE_ID": "test-device"}), "victim")
        assert bus.start(wait=5)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    victim = subprocess.Popen([sys.executable, "-c", script, settings.mqtt.url], stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "ready"
        watcher = buses("watcher")
        assert watcher.start(wait=5)
        inbox = collect(watcher, watcher.topics.status("victim"))
        _, payload, _ = inbox.get(timeout=5)  # retained, or live if it reached the broker after our subscription
        assert payload.decode() == ONLINE
        victim.kill()
        _topic, payload, _ = inbox.get(timeout=10)
        assert payload.decode() == OFFLINE
    finally:
        victim.kill()
        victim.wait()
    # The will is retained: a newcomer learns the victim is offline.
    late = buses("late")
    late_inbox = collect(late, late.topics.status("victim"))
    assert late.start(wait=5)
    _, payload, retained = late_inbox.get(timeout=5)
    assert payload.decode() == OFFLINE and retained


def test_clean_stop_publishes_offline(buses, settings):
    watcher = buses("watcher")
    assert watcher.start(wait=5)
    inbox = collect(watcher, watcher.topics.status("polite"))
    polite = Bus(settings, "polite")
    assert polite.start(wait=5)
    assert inbox.get(timeout=5)[1].decode() == ONLINE
    polite.stop()
    assert inbox.get(timeout=5)[1].decode() == OFFLINE


def test_rpc_round_trip_and_remote_error(buses):
    worker = buses("inference")
    executor = ThreadPoolExecutor(2)

    def echo(request):
        if request.get("fail"):
            raise RemoteError(422, "no_face", "no face in image1", {"image": "image1"})
        return {"echo": request["value"]}

    worker.serve("echo", echo, executor)
    assert worker.start(wait=5)
    client = buses("hub")
    assert client.start(wait=5)
    time.sleep(0.2)
    assert client.call("echo", {"value": 42}, timeout=5) == {"echo": 42}
    with pytest.raises(RemoteError) as info:
        client.call("echo", {"fail": True}, timeout=5)
    assert (info.value.status, info.value.code, info.value.detail) == (422, "no_face", {"image": "image1"})
    executor.shutdown()


def test_rpc_handler_crash_becomes_internal_error(buses):
    worker = buses("inference")
    executor = ThreadPoolExecutor(1)
    worker.serve("boom", lambda request: 1 / 0, executor)
    assert worker.start(wait=5)
    client = buses("hub")
    assert client.start(wait=5)
    time.sleep(0.2)
    with pytest.raises(RemoteError) as info:
        client.call("boom", {}, timeout=5)
    assert info.value.status == 500 and "ZeroDivisionError" in info.value.message
    executor.shutdown()


def test_rpc_without_worker_times_out(buses):
    client = buses("hub")
    assert client.start(wait=5)
    started = time.monotonic()
    with pytest.raises(RpcTimeout, match=r"no inference worker answered 'nobody' within 0\.5 s"):
        client.call("nobody", {}, timeout=0.5)
    assert time.monotonic() - started < 3


@pytest.mark.anyio
async def test_async_call(buses):
    worker = buses("inference")
    executor = ThreadPoolExecutor(1)
    worker.serve("double", lambda r: {"v": r["v"] * 2}, executor)
    assert worker.start(wait=5)
    client = buses("hub")
    assert client.start(wait=5)
    time.sleep(0.2)
    assert await client.acall("double", {"v": 21}, timeout=5) == {"v": 42}
    executor.shutdown()


def test_shared_subscription_spreads_requests_over_workers(buses):
    seen: dict[str, int] = {"a": 0, "b": 0}
    lock = threading.Lock()
    executor = ThreadPoolExecutor(4)

    def handler_for(name):
        def handle(request):
            with lock:
                seen[name] += 1
            return {"worker": name}

        return handle

    for name in ("a", "b"):
        worker = buses(f"worker-{name}")
        worker.serve("work", handler_for(name), executor)
        assert worker.start(wait=5)
    client = buses("hub")
    assert client.start(wait=5)
    time.sleep(0.3)
    answers = [client.request("work", {"i": i}, timeout=10) for i in range(20)]
    workers = [future.result()["worker"] for future in answers]
    assert len(workers) == 20
    assert seen["a"] > 0 and seen["b"] > 0, seen  # each request went to exactly one worker, both got some
    assert seen["a"] + seen["b"] == 20
    executor.shutdown()


def test_request_without_broker_fails_fast():
    settings = load_settings(environ={"MQTT_URL": "mqtt://127.0.0.1:1", "DEVICE_ID": "x"})
    bus = Bus(settings, "hub")
    assert not bus.start(wait=0.5)
    with pytest.raises(BusUnavailable, match=r"127\.0\.0\.1:1 is not connected"):
        bus.request("match", {}, timeout=1)
    bus.stop()


def test_bus_reconnects_after_broker_restart(tmp_path):
    from edge.services import free_port, mosquitto_service

    port = free_port()
    broker = mosquitto_service(port, tmp_path).start()
    settings = load_settings(environ={"MQTT_URL": f"mqtt://127.0.0.1:{port}", "DEVICE_ID": "x"})
    bus = Bus(settings, "hub")
    try:
        assert bus.start(wait=5)
        broker.stop()
        deadline = time.monotonic() + 5
        while bus.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bus.connected
        broker = mosquitto_service(port, tmp_path).start()
        assert bus.wait_connected(35), "paho did not reconnect within its backoff"
    finally:
        bus.stop()
        broker.stop()
