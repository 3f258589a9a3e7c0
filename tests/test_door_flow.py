"""The live door flow with a real face video as the camera: walk-up → 1:N → anti-spoofing → (challenge) → decision,
on MQTT in order; an unknown person; a challenge ended by the face leaving; a worker restarted mid-challenge decides
nothing twice; one worker per device runs the flow."""

from __future__ import annotations

import json
import time

import pytest

from edge.bus.messages import AccessEvent, ChallengeEnd, ChallengeStart, DoorCommand, LivenessEvent
from edge.store import keys
from tests.conftest import make_settings
from tests.devicekit import FACE_THEN_NONE, GAZE, frame_of


def test_an_enrolled_person_is_granted_without_a_challenge_and_the_door_opens(make_device, data_dir):
    device = make_device(FACE_THEN_NONE, challenge=False)
    sid = device.enroll("Face Video", frame_of(data_dir / FACE_THEN_NONE, 10))
    device.start_flow()
    device.start_camera()
    access = AccessEvent.model_validate_json(device.wait_for("/events/access").payload)
    command = DoorCommand.model_validate_json(device.wait_for("/door/command").payload)
    assert access.decision == "granted" and access.subject_id == sid and access.device_id == "test-device"
    assert command.action == "unlock" and command.event_id == access.event_id and command.subject_id == sid
    assert access.timings["identify"] < 0.5
    messages = {m.topic.rsplit("/", 2)[-2] + "/" + m.topic.rsplit("/", 1)[-1]: m for m in device.seen}
    assert messages["door/command"].qos == 1 and not messages["door/command"].retain


def test_an_unknown_person_is_an_event_and_the_door_stays_shut(make_device, data_dir):
    device = make_device(FACE_THEN_NONE, challenge=False)
    device.start_flow()
    device.start_camera()
    access = AccessEvent.model_validate_json(device.wait_for("/events/access").payload)
    assert access.decision == "unknown" and access.subject_id is None and access.reasons == ["empty_gallery"]
    time.sleep(0.5)
    assert not any(m.topic.endswith("/door/command") for m in device.seen + list(device.heard.queue))


def test_a_challenge_ends_when_the_face_leaves(make_device, data_dir):
    device = make_device(FACE_THEN_NONE, challenge=True)
    device.enroll("Face Video", frame_of(data_dir / FACE_THEN_NONE, 10))
    device.start_flow()
    device.start_camera()
    start = ChallengeStart.model_validate_json(device.wait_for("/challenge/start").payload)
    assert len(start.windows) == 3 and start.windows[0].start == pytest.approx(start.start_time)
    assert start.start_time > time.time()  # a moment ahead, for the display
    end = ChallengeEnd.model_validate_json(device.wait_for("/challenge/end").payload)
    assert end.session_id == start.session_id and end.result == "aborted" and end.reasons[0].code == "face_left"
    liveness = LivenessEvent.model_validate_json(device.wait_for("/events/liveness").payload)
    access = AccessEvent.model_validate_json(device.wait_for("/events/access").payload)
    assert liveness.result == "fail" and access.decision == "denied" and access.reasons == ["face_left"]
    order = [m.topic.split("test-device/", 1)[1] for m in device.seen]
    assert order == ["challenge/start", "challenge/end", "events/liveness", "events/access"], order
    assert not any(m.topic.endswith("/door/command") for m in device.heard.queue)
    session = json.loads(device.store.client.get(keys.session(start.session_id)))
    assert session["state"] == "completed" and session["result"] == "fail"


def test_a_worker_restarted_mid_challenge_decides_once_as_interrupted(make_device, data_dir):
    device = make_device(GAZE, challenge=True)
    device.enroll("Gaze Person", frame_of(data_dir / GAZE, 30))
    first = device.start_flow()
    device.start_camera()
    start = ChallengeStart.model_validate_json(device.wait_for("/challenge/start").payload)
    first._stop.set()  # the worker dies mid-challenge: it neither decides nor releases its lock
    first._subscription.unsubscribe()
    first.holds_lock = False
    second = device.start_flow()  # takes over once the dead worker's lock expires (5 s)
    end = ChallengeEnd.model_validate_json(device.wait_for("/challenge/end", timeout=15).payload)
    access = AccessEvent.model_validate_json(device.wait_for("/events/access").payload)
    assert end.session_id == start.session_id and end.reasons[0].code == "interrupted"
    assert access.decision == "denied" and access.reasons == ["interrupted"]
    with second._lock:
        second._close_interrupted()  # a second take-over finds nothing left to decide
    time.sleep(1.0)
    interrupted = [m for m in list(device.heard.queue) if m.topic.endswith("/events/access")
                   and "interrupted" in AccessEvent.model_validate_json(m.payload).reasons]  # fmt: skip
    assert interrupted == []


def test_one_worker_per_device_runs_the_flow(make_device, device_settings, engine, redis_server, mqtt_broker, tmp_path):
    device = make_device(FACE_THEN_NONE, challenge=False)
    flows = [device.start_flow(), device.start_flow()]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(f.holds_lock for f in flows):
        time.sleep(0.1)
    time.sleep(1.5)
    assert sorted(f.holds_lock for f in flows) == [False, True]
    # Another device on the same Redis runs its own flow.
    other = make_settings(tmp_path / "other", redis_server.port, mqtt_broker.port, DEVICE_ID="door-2")
    assert keys.door_flow_lock("door-2") != keys.door_flow_lock(device_settings.device_id)
    assert other.device_id == "door-2"


def test_a_challenge_ends_when_the_camera_stalls(make_device, data_dir):
    device = make_device(GAZE, challenge=True)
    device.enroll("Gaze Person", frame_of(data_dir / GAZE, 30))
    device.start_flow()
    device.start_camera()
    start = ChallengeStart.model_validate_json(device.wait_for("/challenge/start").payload)
    device.camera_stop.set()  # the camera stops delivering during the challenge
    end = ChallengeEnd.model_validate_json(device.wait_for("/challenge/end").payload)
    access = AccessEvent.model_validate_json(device.wait_for("/events/access").payload)
    assert end.session_id == start.session_id and end.reasons[0].code == "camera_stalled"
    assert access.decision == "denied" and access.reasons == ["camera_stalled"]
