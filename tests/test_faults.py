"""Faults with real processes: Redis and Mosquitto killed and brought back, the spool disk full. The API answers
503 naming the dependency within a second, never 500, never hangs, burns no session, and recovers within 5 s of the
dependency's return. (A worker dying mid-request: tests/test_security.py and tests/test_bus.py.)"""

import base64
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edge.services import free_port, mosquitto_service, redis_service
from tests.conftest import backdate, hub_client, make_settings, wait_for_inference

PHOTO = "face_recognition/examples/obama.jpg"


@pytest.fixture
def own_services(tmp_path):
    """A Redis and a broker of this test's own, so that killing them disturbs no other test."""
    redis = redis_service(free_port(), tmp_path / "redis", persistent=False).start()
    broker = mosquitto_service(free_port(), tmp_path / "broker").start()
    yield redis, broker
    redis.stop()
    broker.stop()


@pytest.fixture
def stack(tmp_path, own_services, engine):
    """A hub (TestClient) and an inference worker on the test's own Redis and broker."""
    from concurrent.futures import ThreadPoolExecutor

    from edge.bus import Bus, Component, RpcMethod
    from edge.inference.service import InferenceService

    redis, broker = own_services
    settings = make_settings(tmp_path, redis.port, broker.port)
    worker = Bus(settings, Component.INFERENCE)
    service = InferenceService(settings, engine)
    pool = ThreadPoolExecutor(2)
    for method, handler in ((RpcMethod.MATCH, service.match), (RpcMethod.HEALTH, service.health)):
        worker.serve(method, handler, pool)
    assert worker.start(wait=5)
    client = hub_client(settings)
    wait_for_inference(client, routes=("match",))
    yield client, redis, broker
    client.__exit__(None, None, None)
    worker.stop()
    pool.shutdown()
    service.close()


def until(predicate, timeout: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def test_redis_killed_and_back(stack):
    client, redis, _ = stack
    redis.process.kill()
    redis.process.wait()
    started = time.monotonic()
    response = client.post("/initiate-liveness", json={})
    assert time.monotonic() - started < 1.0
    assert response.status_code == 503 and response.json()["error"]["dependency"] == "redis"
    redis.start()
    assert until(lambda: client.post("/initiate-liveness", json={}).status_code == 200, 5) < 5


def test_broker_killed_and_back(stack, faces_dir):
    client, _, broker = stack
    photo = base64.b64encode((faces_dir / PHOTO).read_bytes()).decode()

    def match() -> int:
        return client.post("/match", json={"image1": photo, "image2": photo}).status_code

    assert match() == 200
    broker.process.kill()
    broker.process.wait()
    until(lambda: not client.app.state.hub.bus.connected, 2)
    started = time.monotonic()
    response = client.post("/match", json={"image1": photo, "image2": photo})
    assert time.monotonic() - started < 1.0
    assert response.status_code == 503 and response.json()["error"]["dependency"] == "broker"
    broker.start()
    assert until(lambda: match() == 200, 5) < 5  # hub and worker both back, presence learnt again


def test_a_full_spool_disk_is_503_naming_it_and_keeps_the_session(tmp_path, redis_server, mqtt_broker):
    import os
    from concurrent.futures import ThreadPoolExecutor

    from edge.bus import Bus, Component, RpcMethod

    spool = tmp_path / "state" / "spool"
    spool.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(spool)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    pool = ThreadPoolExecutor(2)
    released = threading.Event()
    settings = make_settings(tmp_path, redis_server.port, mqtt_broker.port)
    worker = Bus(settings, Component.INFERENCE, instance="spool-test")
    worker.serve(RpcMethod.LIVENESS, lambda request: None, pool)
    worker.serve(RpcMethod.LIVENESS_STREAM, lambda request: released.wait(30), pool)  # a worker still reading
    assert worker.start(wait=5)
    client = hub_client(settings)
    try:
        assert client.app.state.hub.presence.wait_until(lambda p: p.serves(f"liveness/{settings.host_id}"), 5)
        session = client.post("/initiate-liveness", json={}).json()["session_id"]
        backdate(client, session)
        started = time.monotonic()
        response = client.post("/submit-liveness", data={"session_id": session},
                               files={"video": ("v.webm", os.urandom(256 * 1024), "video/webm")})  # fmt: skip
        assert time.monotonic() - started < 1.0
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "spool_unavailable" and error["dependency"] == "spool"
        assert client.app.state.hub.store.get_session(session)["state"] == "pending"
        assert not list(Path(spool).iterdir())  # the partial upload was removed
        # Streamed: the disk fills up between chunks.
        assert client.app.state.hub.presence.wait_until(lambda p: p.serves(f"liveness-stream/{settings.host_id}"), 5)
        for index in range(8):
            response = client.post(f"/submit-liveness/stream/{session}", params={"index": index},
                                   content=os.urandom(16 * 1024))  # fmt: skip
            if response.status_code != 200:
                break
        assert response.status_code == 503 and response.json()["error"]["code"] == "spool_unavailable", response.text
        assert client.app.state.hub.store.get_session(session)["state"] == "pending"  # given back
        assert not list(Path(spool).iterdir())
    finally:
        released.set()
        client.__exit__(None, None, None)
        worker.stop()
        pool.shutdown()
        subprocess.run(["umount", str(spool)], check=False)


def test_the_gallery_says_redis_is_down_and_comes_back(tmp_path, own_services, engine, faces_dir):
    from tests.conftest import start_worker

    redis, broker = own_services
    settings = make_settings(tmp_path, redis.port, broker.port)
    _, stop = start_worker(settings, engine)
    client = hub_client(settings)
    try:
        wait_for_inference(client, routes=("identify", "enroll"))
        photo = base64.b64encode((faces_dir / PHOTO).read_bytes()).decode()
        assert client.post("/subjects", json={"name": "Barack Obama", "photos": [photo]}).status_code == 201
        redis.process.kill()
        redis.process.wait()
        for response in (client.get("/subjects"), client.post("/identify", json={"image": photo})):
            assert response.status_code == 503 and response.json()["error"]["dependency"] == "redis", response.text
        redis.start()  # not persistent: the gallery comes back empty, and the worker follows it
        until(lambda: client.get("/subjects").status_code == 200, 5)
        answer = client.post("/identify", json={"image": photo}).json()
        assert answer["outcome"] == "unknown" and answer["threshold"]["gallery_faces"] == 0
    finally:
        client.__exit__(None, None, None)
        stop()
