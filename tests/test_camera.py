"""The camera daemon: a real face video as the camera, frames on the bus with their properties, the configured rate,
stats, a camera that is missing, lost and back."""

from __future__ import annotations

import itertools
import queue
import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from edge import clock
from edge.bus import Bus, Component
from edge.bus.messages import Stats
from edge.camera.publisher import CAPTURE_TIME, HEIGHT, SEQUENCE, WIDTH, CameraPublisher
from edge.camera.sources import FileSource, SourceError
from edge.config import CameraSettings

VIDEO = "video/hysts_pytorch_mpiigaze_demo/assets/inputs/video00.mp4"  # 1280×720, 25 fps, a real face


@pytest.fixture
def video(data_dir):
    return data_dir / VIDEO


def start(settings, camera: CameraSettings, factory=None):
    bus = Bus(settings, Component.CAMERA)
    assert bus.start(wait=5)
    publisher = CameraPublisher(camera, bus, factory) if factory else CameraPublisher(camera, bus)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(5)
        bus.stop()

    return publisher, close


def listen(settings, topic_of):
    bus = Bus(settings, Component.INFERENCE)
    heard: queue.Queue = queue.Queue()
    bus.subscribe(topic_of(bus.topics), heard.put, maxsize=10_000)
    assert bus.start(wait=5)
    return bus, heard


def test_frames_arrive_at_the_configured_rate_with_their_capture_time(settings, video):
    listener, frames = listen(settings, lambda t: t.camera_frame)
    _, stats = listen(settings, lambda t: t.stats)
    camera = CameraSettings(source="file", device=str(video), fps=10, stats_interval=1.0)
    publisher, close = start(settings, camera)
    try:
        time.sleep(3.2)
    finally:
        close()
        listener.stop()
    received = [frames.get_nowait() for _ in range(frames.qsize())]
    assert 25 <= len(received) <= 35, len(received)  # 10 per second for ~3 s (the file itself runs at 25)
    sequences = [int(m.user_properties[SEQUENCE]) for m in received]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    captured = [float(m.user_properties[CAPTURE_TIME]) for m in received]
    assert all(b > a for a, b in itertools.pairwise(captured))
    assert abs(captured[-1] - clock.now()) < 2.0
    gaps = np.diff(captured)
    assert 0.08 <= float(np.median(gaps)) <= 0.12
    first = received[0]
    assert (first.user_properties[WIDTH], first.user_properties[HEIGHT]) == ("640", "360")  # scaled to 640 wide
    image = cv2.imdecode(np.frombuffer(first.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, 640, 3)
    reports = [Stats.model_validate_json(stats.get(timeout=2).payload) for _ in range(2)]
    assert reports[-1].component == Component.CAMERA and 8 <= reports[-1].figures["fps"] <= 12
    assert reports[-1].figures["camera_open"] == 1.0 and reports[-1].figures["skipped"] > 0
    assert publisher.sequence == sequences[-1]


def test_a_missing_camera_is_said_once_and_picked_up_when_it_appears(settings, video, tmp_path, caplog):
    target = tmp_path / "camera.mp4"
    listener, frames = listen(settings, lambda t: t.camera_frame)
    publisher, close = start(settings, CameraSettings(source="file", device=str(target), fps=5))
    try:
        time.sleep(2.0)  # a few retries
        assert frames.empty() and not publisher.camera_open
        warnings = [r for r in caplog.records if "no camera" in r.getMessage()]
        assert len(warnings) == 1 and "no video file" in warnings[0].getMessage()
        shutil.copy(video, target)
        assert frames.get(timeout=10)  # retries back off to at most a few seconds here
        assert publisher.camera_open
    finally:
        close()
        listener.stop()


class FlakySource(FileSource):
    """A file source that stops delivering after a number of frames, the first time only (a camera unplugged)."""

    failed = False

    def __init__(self, settings, after: int = 10):
        super().__init__(settings)
        self.after = after

    def read(self):
        self.after -= 1
        if self.after < 0 and not FlakySource.failed:
            FlakySource.failed = True
            raise SourceError("stopped delivering frames")
        return super().read()


def test_a_lost_camera_is_reconnected(settings, video, caplog):
    listener, frames = listen(settings, lambda t: t.camera_frame)
    FlakySource.failed = False
    _publisher, close = start(settings, CameraSettings(source="file", device=str(video), fps=10), FlakySource)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not FlakySource.failed or frames.qsize() < 15):
            time.sleep(0.1)
        assert FlakySource.failed and frames.qsize() >= 15
        assert any("camera lost" in r.getMessage() for r in caplog.records)
    finally:
        close()
        listener.stop()
