"""Frame sources, chosen by ``camera.source``. Each yields BGR frames with their capture time on the device clock.

- ``v4l2``: a USB/V4L2 camera (``/dev/video0`` or an index) through OpenCV.
- ``rtsp``: a network camera's RTSP URL through OpenCV (FFmpeg).
- ``gstreamer``: a GStreamer pipeline ending in ``appsink`` (Jetson CSI: ``nvarguscamerasrc ! … ! appsink``); needs
  an OpenCV built with GStreamer (NVIDIA's on a Jetson).
- ``picamera2``: the Raspberry Pi camera (``picamera2`` comes with Raspberry Pi OS: make the venv with
  ``--system-site-packages``). Its ``RGB888`` format is laid out B, G, R in memory: already what OpenCV calls BGR.
- ``file``: a video file, looped and paced at its own frame rate (tests and demos).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge import clock
from edge.config import CameraSettings


class SourceError(Exception):
    """The camera cannot be opened or stopped delivering; the message says which and what to check."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR
    captured: float  # epoch seconds on the device clock (edge.clock)


class FrameSource(Protocol):
    description: str

    def open(self) -> None: ...

    def read(self) -> Frame: ...

    def close(self) -> None: ...


class OpenCVSource:
    """V4L2, RTSP and GStreamer: OpenCV's VideoCapture with the right backend."""

    def __init__(self, settings: CameraSettings):
        self.settings = settings
        kind = settings.source
        self.description = f"{kind} {settings.device}"
        self._backend = {"v4l2": cv2.CAP_V4L2, "rtsp": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER}[kind]
        self._capture: cv2.VideoCapture | None = None

    def _target(self) -> str | int:
        device = self.settings.device
        return int(device) if self.settings.source == "v4l2" and device.isdigit() else device

    def open(self) -> None:
        device = self.settings.device
        if self.settings.source == "v4l2" and not device.isdigit() and not Path(device).exists():
            raise SourceError(f"no camera at {self.settings.device} (is it plugged in? `ls /dev/video*`)")
        capture = cv2.VideoCapture(self._target(), self._backend)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.description} (in use by another program, or no permission: "
                              "is the user in the `video` group?)")  # fmt: skip
        if self.settings.source == "v4l2":
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.settings.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.settings.height)
            capture.set(cv2.CAP_PROP_FPS, self.settings.capture_fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        self._capture = capture

    def read(self) -> Frame:
        if self._capture is None:
            raise SourceError(f"{self.description} is not open")
        ok, image = self._capture.read()
        captured = clock.now()
        if not ok or image is None:
            raise SourceError(f"{self.description} stopped delivering frames")
        return Frame(image, captured)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class FileSource:
    """A video file played in a loop at its own frame rate, as if a camera were filming it."""

    def __init__(self, settings: CameraSettings):
        self.path = Path(settings.device)
        self.loop = settings.loop
        self.description = f"file {self.path}"
        self._capture: cv2.VideoCapture | None = None
        self._interval = 1 / 30
        self._next = 0.0

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"no video file at {self.path}")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise SourceError(f"{self.path} cannot be decoded as a video")
        fps = capture.get(cv2.CAP_PROP_FPS)
        self._interval = 1 / fps if 1 <= fps <= 240 else 1 / 30
        self._capture = capture
        self._next = time.monotonic()

    def read(self) -> Frame:
        if self._capture is None:
            raise SourceError(f"{self.description} is not open")
        ok, image = self._capture.read()
        if not ok and self.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
        if not ok or image is None:
            raise SourceError(f"{self.description} has no more frames")
        # Paced like a camera: a frame is "captured" at its slot in time, never faster than the file's rate.
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self._next = time.monotonic()  # fell behind: do not burst to catch up
        self._next += self._interval
        return Frame(image, clock.now())

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class PiCameraSource:
    def __init__(self, settings: CameraSettings):
        self.settings = settings
        self.description = "picamera2"
        self._camera = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError:
            raise SourceError(
                "picamera2 is not importable: on Raspberry Pi OS, `sudo apt install python3-picamera2` and make the "
                "venv with --system-site-packages (install.sh does on a Pi)"
            ) from None
        try:
            camera = Picamera2()
            size = (self.settings.width, self.settings.height)
            camera.configure(camera.create_video_configuration(main={"format": "RGB888", "size": size}))
            camera.start()
        except Exception as exc:  # libcamera raises its own types
            raise SourceError(f"the Pi camera cannot be started: {exc}") from None
        self._camera = camera

    def read(self) -> Frame:
        if self._camera is None:
            raise SourceError("the Pi camera is not open")
        try:
            image = self._camera.capture_array("main")  # RGB888 = B, G, R bytes: OpenCV's BGR already
        except Exception as exc:
            raise SourceError(f"the Pi camera stopped delivering frames: {exc}") from None
        return Frame(np.ascontiguousarray(image[:, :, :3]), clock.now())

    def close(self) -> None:
        if self._camera is not None:
            self._camera.stop()
            self._camera.close()
            self._camera = None


def make_source(settings: CameraSettings) -> FrameSource:
    if settings.source == "file":
        return FileSource(settings)
    if settings.source == "picamera2":
        return PiCameraSource(settings)
    return OpenCVSource(settings)


def openable_cameras(limit: int = 10) -> list[str]:
    """The V4L2 devices OpenCV can open and read a frame from (for `facematch doctor`)."""
    found = []
    for path in sorted(Path("/dev").glob("video*"))[:limit]:
        capture = cv2.VideoCapture(str(path), cv2.CAP_V4L2)
        try:
            if capture.isOpened() and capture.read()[0]:
                width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
                found.append(f"{path} ({width}x{height})")
        finally:
            capture.release()
    return found
