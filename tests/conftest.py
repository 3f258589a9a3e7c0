"""Shared fixtures: a real redis-server and a real mosquitto on free loopback ports, and the shared data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import Settings, load_settings
from edge.services import LocalService, free_port, mosquitto_service, redis_service

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_scoring():
    from edge.config import LivenessSettings
    from edge.inference.liveness import scoring_params

    return scoring_params(LivenessSettings())


# The validator's and the anti-spoofing verdict's parameters as configured by default (one default: edge/config.py).
PARAMS, PRESENTATION = _default_scoring()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shared",
        default=os.environ.get("FACEMATCH_SHARED", str(PROJECT_ROOT.parent / "shared")),
        help="the shared folder with data/ and models/ (default: ../shared or $FACEMATCH_SHARED)",
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def shared_dir(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.getoption("--shared"))


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data"
    if not path.is_dir():
        pytest.skip(f"real face data not found at {path} (pass --shared or set FACEMATCH_SHARED)")
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    service = redis_service(free_port(), tmp_path_factory.mktemp("redis"), persistent=False).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    service = mosquitto_service(free_port(), tmp_path_factory.mktemp("mosquitto")).start()
    yield service
    service.stop()


def make_settings(tmp_path: Path, redis_port: int, mqtt_port: int, **extra: str) -> Settings:
    """Settings pointing at the test services, built exactly as the product builds them (from the environment)."""
    env = {
        "FACEMATCH_CONFIG": str(PROJECT_ROOT / "config.yaml"),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MQTT_URL": f"mqtt://127.0.0.1:{mqtt_port}",
        "FACEMATCH_STATE_DIR": str(tmp_path / "state"),
        "FACEMATCH_API_KEYS_FILE": str(tmp_path / "api_keys.json"),
        "DEVICE_ID": "test-device",
        **extra,
    }
    return load_settings(environ=env)


@pytest.fixture
def settings(tmp_path: Path, redis_server: LocalService, mqtt_broker: LocalService) -> Settings:
    return make_settings(tmp_path, redis_server.port, mqtt_broker.port)


@pytest.fixture(scope="session")
def model_settings(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Settings:
    """Settings whose default models are present: fetched by the project's fetcher if install.sh has not.

    A model that cannot be fetched fails the tests, except on a machine with neither ../shared/models nor the
    internet (the MiniFASNet weights have no PyPI source): there the tests that need models skip and say why.
    """
    from models.fetch import FetchError, fetch_one, select

    settings = load_settings(environ={"DEVICE_ID": "test-device"})
    work = tmp_path_factory.mktemp("fetch")
    for spec in select([], everything=False):
        try:
            fetch_one(spec, settings, work, say=lambda _: None)
        except FetchError as exc:
            if not (shared_dir / "models").is_dir():
                pytest.skip(f"model {spec.name} cannot be fetched here (no {shared_dir / 'models'}, no network): {exc}")
            pytest.fail(f"model {spec.name} is missing and could not be fetched: {exc}")
    return settings


@pytest.fixture(scope="session")
def gaze_nets(model_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    """The optional gaze network (its MNN runtime and CC-BY-NC-SA weights, fetched by the project's fetcher)."""
    from edge.vision.gaze_net import GazeNetPool, GazeNetUnavailable
    from models import load_manifest, model_path
    from models.fetch import FetchError, fetch_one

    try:
        fetch_one(load_manifest().models["gaze_net"], model_settings, tmp_path_factory.mktemp("fetch"), lambda _: None)
        return GazeNetPool(model_path(model_settings.models.dir, "gaze_net"))
    except (FetchError, GazeNetUnavailable) as exc:
        pytest.skip(f"the optional gaze network is not available here: {exc}")


@pytest.fixture(scope="session")
def engine(model_settings: Settings):
    from edge.vision.engine import FaceEngine

    return FaceEngine(model_settings)


@pytest.fixture(scope="session")
def faces_dir(data_dir: Path) -> Path:
    return data_dir / "faces"


@pytest.fixture(scope="session")
def lfw(faces_dir: Path) -> Path:
    """The LFW images of ../shared/data (one folder per person)."""
    path = faces_dir / "lfw_official" / "images"
    if not path.is_dir():
        pytest.skip(f"LFW images not found at {path}")
    return path


def read_bgr(path: Path):
    from edge.vision.decode import decode_image

    return decode_image(path.read_bytes(), 1024)


def clear_rate_limits(settings: Settings) -> None:
    """Rate-limit counters live in Redis, shared by every hub: each test starts with none (TestClient's address is
    always "testclient")."""
    import redis

    from edge.store.keys import RATE_LIMIT_PREFIX

    try:
        with redis.Redis.from_url(settings.redis.url, socket_connect_timeout=1) as client:
            for key in client.scan_iter(f"{RATE_LIMIT_PREFIX}*"):
                client.delete(key)
    except redis.ConnectionError:
        pass  # a test of Redis being down: nothing to clear


def hub_client(settings: Settings, key: str | None = "create"):
    """A started TestClient of the hub (lifespan run), sending a freshly created API key unless ``key`` is None."""
    from fastapi.testclient import TestClient

    from hub.app import create_app
    from hub.security import create_key

    if key == "create":
        key = create_key(settings.api.keys_file, "test")
    clear_rate_limits(settings)
    client = TestClient(create_app(settings), headers={"X-API-Key": key} if key else {})
    client.__enter__()
    return client


@pytest.fixture
def inference_worker(settings: Settings, engine):
    """A real inference worker (the daemon's service and RPCs, wired as the daemon wires them) on the test broker;
    its service is ``worker.service``."""
    bus, close = start_worker(settings, engine)
    yield bus
    close()


def start_worker(settings: Settings, engine, instance: str | None = None):
    """An inference worker wired as the daemon wires it (match, liveness, health, the gallery's RPCs and its
    change events): (its bus, a function that stops it). ``bus.service``/``bus.gallery`` are its services."""
    from edge.bus import Bus, Component
    from edge.inference.gallery import GalleryService
    from edge.inference.service import InferenceService
    from edge.store import Store
    from edge.store.gallery import Gallery

    if instance:
        settings = settings.model_copy(update={"instance_id": instance})
    bus = Bus(settings, Component.INFERENCE)
    service = InferenceService(settings, engine)
    store = Store(settings.redis.url)
    gallery = GalleryService(settings, engine, Gallery.from_settings(store, settings), bus)
    executors = service.serve(bus, gallery)
    assert bus.start(wait=5)
    bus.service, bus.gallery = service, gallery

    def close() -> None:
        bus.stop()
        for executor in executors:
            executor.shutdown()
        service.close()
        store.close()

    return bus, close


@pytest.fixture
def api(settings: Settings, inference_worker):
    """A hub TestClient with an API key, once it has seen the inference worker online."""
    client = hub_client(settings)
    wait_for_inference(client)
    yield client
    client.__exit__(None, None, None)


def wait_for_inference(client, timeout: float = 5.0, routes: tuple[str, ...] | None = None) -> None:
    """Until the hub sees a worker serving ``routes`` (default: match and this host's liveness)."""
    from edge.bus import RpcMethod, rpc_route

    hub = client.app.state.hub
    routes = routes or ("match", rpc_route(RpcMethod.LIVENESS, hub.settings.host_id))
    if not hub.presence.wait_until(lambda p: all(p.serves(r) for r in routes), timeout):
        raise AssertionError("the hub never saw the inference worker online")


@pytest.fixture(scope="module")
def up_stack(tmp_path_factory, model_settings):
    """`facematch up` on free ports, with one API key from the environment: (url, key)."""
    import secrets
    import signal
    import subprocess
    import sys

    from edge.services import free_port

    state = tmp_path_factory.mktemp("up")
    key = secrets.token_urlsafe(16)
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "FACEMATCH_STATE_DIR": str(state),
        "FACEMATCH_API_KEYS": key,
        "FACEMATCH_API_KEYS_FILE": str(state / "none.json"),
        "DEVICE_ID": "up-stack",
    }
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "up"], env=env, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
    except BaseException:
        process.kill()
        raise
    yield url, key
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def wait_healthy(url: str, process, timeout: float = 90.0) -> None:
    """Until the `facematch up` at ``url`` answers /health with 200; fails the test if it exits or takes too long."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail(f"facematch up exited with code {process.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"facematch up did not become healthy within {timeout:g} s")
        time.sleep(0.3)


def backdate(client, session_id: str, seconds: float = 60.0) -> None:
    """Move a session's creation back in time, as if the challenge had been shown and recorded meanwhile (a video
    submitted sooner than the challenge lasts is refused as made in advance)."""
    import json

    from edge.store import keys

    redis = client.app.state.hub.store.client
    key = keys.session(session_id)
    raw = redis.get(key)
    if raw is None:
        return  # an unknown session stays unknown
    document = json.loads(raw)
    document["created"] -= seconds
    redis.set(key, json.dumps(document), keepttl=True)


@pytest.fixture
def device_settings(settings, model_settings):
    """The test settings with the fetched models."""
    return settings.model_copy(update={"models": model_settings.models})


@pytest.fixture
def make_device(device_settings, engine, data_dir):
    """``make_device(video, **door)``: a :class:`tests.devicekit.Device` playing ``data_dir/video`` (closed after)."""
    from tests.devicekit import Device

    made = []

    def make(video: str, **door):
        device = Device(device_settings, engine, data_dir / video, **door)
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()


@pytest.fixture(scope="session")
def challenge_video(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """11.5 s of a real recording (the longest drawn challenge is 10.8 s), re-encoded as a browser would send it."""
    import subprocess

    source = data_dir / "gaze/eyegaze/both/game_video_1738773752.mp4"
    target = tmp_path_factory.mktemp("video") / "challenge.webm"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-ss", "5", "-t", "11.5", "-i", str(source), "-an", "-c:v", "libvpx",
         "-b:v", "1M", str(target)],
        check=True,
    )  # fmt: skip
    return target
