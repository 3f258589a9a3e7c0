"""Device mode end to end: `facematch up` with the camera daemon playing a real face video, a person enrolled through
the API, and the walk-up's decision and door command on the broker (as the display and the door controller, each
with its own login)."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import time

import httpx
import pytest

from edge.bus import Bus, Component
from edge.bus.messages import AccessEvent, DoorCommand
from edge.config import load_settings
from edge.services import free_port
from tests.conftest import PROJECT_ROOT, wait_healthy
from tests.devicekit import FACE_THEN_NONE, GAZE, frame_of

VIDEO = FACE_THEN_NONE  # a face ~2.5 s, then an empty room
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"


def enrolment_photo(data_dir) -> str:
    """The person of the video, from its 11th frame, as the operator would enrol them (base64 JPEG)."""
    return frame_of(data_dir / VIDEO, 10)


def keep_screenshots(settings, names: tuple[str, ...]) -> None:
    """The display's first frame of each named screen exists; copied to the artefacts."""
    import shutil

    shots = settings.display.screenshot_dir
    time.sleep(1.0)  # the result screen's first frame
    ARTIFACTS.mkdir(exist_ok=True)
    for name in names:
        png = shots / f"display-{name}.png"
        assert png.exists(), f"no {png.name}: {sorted(p.name for p in shots.glob('*'))}"
        shutil.copy(png, ARTIFACTS / f"device-{png.name}")


@pytest.fixture
def device(request, tmp_path, data_dir, model_settings):
    extra = getattr(request, "param", {})
    key = secrets.token_urlsafe(16)
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "FACEMATCH_STATE_DIR": str(tmp_path / "state"),
        "FACEMATCH_API_KEYS": key,
        "FACEMATCH_API_KEYS_FILE": str(tmp_path / "none.json"),
        "DEVICE_ID": "front-door",
        "FACEMATCH_CAMERA__SOURCE": "file",
        "FACEMATCH_CAMERA__DEVICE": str(data_dir / VIDEO),
        "FACEMATCH_DOOR__CHALLENGE": "false",
        **{k: v.replace("{tmp}", str(tmp_path)).replace("{data}", str(data_dir)) for k, v in extra.items()},
    }
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "up"], env=env, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, key, load_settings(environ=env)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_a_walk_up_on_the_camera_opens_the_door(device, data_dir):
    url, key, settings = device
    photo = enrolment_photo(data_dir)
    heard: queue.Queue = queue.Queue()
    listeners = [Bus(settings, Component.DISPLAY), Bus(settings, Component.DOOR)]  # logins from credentials.json
    listeners[0].subscribe(listeners[0].topics.event_filter, heard.put)
    listeners[1].subscribe(listeners[1].topics.door_command, heard.put)
    try:
        assert all(bus.start(wait=10) for bus in listeners)
        enrolled = httpx.post(f"{url}/subjects", headers={"X-API-Key": key}, timeout=60,
                              json={"name": "Visitor", "photos": [photo]})  # fmt: skip
        assert enrolled.status_code == 201, enrolled.text
        subject_id = enrolled.json()["subject_id"]
        granted, command = None, None
        deadline = time.monotonic() + 40  # the video loops every ~6.4 s: the next walk-up after enrolment
        while time.monotonic() < deadline and not (granted and command):
            try:
                message = heard.get(timeout=0.5)
            except queue.Empty:
                continue
            if message.topic.endswith("/events/access"):
                event = AccessEvent.model_validate_json(message.payload)
                if event.decision == "granted":
                    granted = event
                else:
                    assert event.decision == "unknown"  # before the enrolment reached the flow
            elif message.topic.endswith("/door/command"):
                command = DoorCommand.model_validate_json(message.payload)
        assert granted is not None and granted.subject_id == subject_id and granted.device_id == "front-door"
        assert command is not None and command.event_id == granted.event_id and command.action == "unlock"
    finally:
        for bus in listeners:
            bus.stop()


WITH_DISPLAY = {
    "FACEMATCH_DOOR__CHALLENGE": "true",
    # The person in the video stays a few seconds: start the challenge at once and light its first cell early (0.2
    # to 1.2 s after the start instead of 1 to 2 s), so that a slow machine still draws a lit cell before they leave.
    "FACEMATCH_DOOR__CHALLENGE_LEAD": "0.2",
    "FACEMATCH_DOOR__STEADY_SECONDS": "0",
    "FACEMATCH_DISPLAY__SCREENSHOT_DIR": "{tmp}/shots",
    "FACEMATCH_DISPLAY__ENABLED": "true",
    "FACEMATCH_DISPLAY__FULLSCREEN": "false",
    "SDL_VIDEODRIVER": "offscreen",
}


@pytest.mark.parametrize("device", [WITH_DISPLAY], indirect=True)
def test_the_walk_up_sequence_on_the_bus_and_on_the_display(device, data_dir, tmp_path):
    """The demo: a challenge shown on the display (SDL offscreen), ended because the person in the video walks
    away, and the denial with what to do, on the bus in order and on screen."""
    url, key, settings = device
    photo = enrolment_photo(data_dir)
    heard: queue.Queue = queue.Queue()
    display = Bus(settings, Component.DISPLAY)
    # One subscription, so one mailbox thread: two would hand over their messages in whichever order their threads
    # ran, and the order is what is checked (the broker keeps the publisher's order within one subscription).
    display.subscribe(f"{display.topics.base}/#", heard.put, maxsize=1000)
    lit = settings.display.screenshot_dir / "display-challenge-lit.png"
    walk_ups: list[list[str]] = []
    try:
        assert display.start(wait=10)
        assert httpx.post(f"{url}/subjects", headers={"X-API-Key": key}, timeout=60,
                          json={"name": "Visitor", "photos": [photo]}).status_code == 201  # fmt: skip
        # The enrolment reaches the flow at any point of the video: a person first identified just before they walk
        # away leaves before a cell is lit. Such a walk-up is still checked; the video loops every ~6.4 s, so the
        # next one, from the start of the person's stay, lights a cell.
        order: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (walk_ups and lit.exists()):
            try:
                message = heard.get(timeout=0.5)
            except queue.Empty:
                continue
            topic = message.topic.split("front-door/", 1)[1]
            if not topic.startswith(("challenge/", "events/liveness", "events/access")):
                continue
            if topic == "events/access" and "challenge/start" not in order:
                continue  # an "unknown" before the enrolment reached the flow
            order.append(topic)
            if topic == "events/access":
                walk_ups.append(order)
                order = []
                time.sleep(0.5)  # the display draws what it heard
        assert walk_ups, f"no walk-up with a challenge; heard {order}"
        for seen in walk_ups:
            assert seen[:4] == ["challenge/start", "challenge/end", "events/liveness", "events/access"], walk_ups
    finally:
        display.stop()
    keep_screenshots(settings, ("countdown", "challenge-lit", "result"))


@pytest.mark.parametrize("device", [{**WITH_DISPLAY, "FACEMATCH_CAMERA__DEVICE": "{data}/" + GAZE}], indirect=True)
def test_a_gaze_calibration_asked_for_on_the_command_line_is_shown_on_the_display(device, data_dir):
    """The operator's side of the enrolment calibration: `facematch subjects calibrate` follows it to its outcome
    while the display lights the six cells (screenshots kept as artefacts)."""
    url, key, settings = device
    created = httpx.post(f"{url}/subjects", headers={"X-API-Key": key}, timeout=60,
                         json={"name": "Gaze Person", "photos": [frame_of(data_dir / GAZE, 30)]})  # fmt: skip
    assert created.status_code == 201
    sid = created.json()["subject_id"]
    run = subprocess.run([sys.executable, "-m", "edge.cli", "subjects", "--url", url, "calibrate", sid, "--wait", "90"],
                         env={**os.environ, "FACEMATCH_API_KEY": key}, cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    said = run.stdout + run.stderr
    assert "calibration requested" in said and "running" in said, said
    # The recording follows a moving target, not the cells: saved or not, the outcome is told, with its reason.
    assert ("saved: gain" in said and run.returncode == 0) or ("calibration failed:" in said and run.returncode == 1)
    keep_screenshots(settings, ("calibration-countdown", "calibration-challenge-lit", "calibration-result"))
