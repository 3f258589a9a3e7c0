"""The camera daemon's loop: read frames, keep the configured rate, publish JPEGs with their capture time, report.

A source that cannot be opened, or that stops, is retried with backoff (0.5 s doubling to 30 s). The first failure
is logged once as a warning with what to check; retries are quiet until the camera is back.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable

import cv2

from edge import clock
from edge.bus import Bus, Component
from edge.bus.messages import Stats
from edge.camera.sources import Frame, FrameSource, SourceError, make_source
from edge.config import CameraSettings

log = logging.getLogger("facematch.camera")

FIRST_RETRY = 0.5
MAX_RETRY = 30.0

# User properties of a camera/frame message (MQTT v5): the one place these names are spelt.
CAPTURE_TIME = "capture_time"
SEQUENCE = "seq"
WIDTH = "width"
HEIGHT = "height"


class CameraPublisher:
    def __init__(self, settings: CameraSettings, bus: Bus, source_factory: Callable[[CameraSettings], FrameSource]
                 = make_source):  # fmt: skip
        self.settings = settings
        self.bus = bus
        self.source_factory = source_factory
        self.sequence = 0
        self.camera_open = False
        self.last_loop = time.monotonic()  # for the watchdog: the loop is alive
        self._window: dict[str, list[float]] = {"latency": [], "encode": []}
        self._counts = {"read": 0, "published": 0, "skipped": 0, "errors": 0}
        self._window_started = time.monotonic()

    # -- the loop ---------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        retry = FIRST_RETRY
        complained = False
        while not stop.is_set():
            self.last_loop = time.monotonic()
            source = self.source_factory(self.settings)
            try:
                source.open()
            except SourceError as exc:
                self._counts["errors"] += 1
                if not complained:
                    log.warning("no camera: %s; retrying quietly (every %g s at most) until it appears", exc, MAX_RETRY)
                    complained = True
                self._maybe_report()
                stop.wait(retry)
                retry = min(retry * 2, MAX_RETRY)
                continue
            log.info("camera open: %s, publishing %g frames/s", source.description, self.settings.fps)
            self.camera_open, retry, complained = True, FIRST_RETRY, False
            try:
                self._stream(source, stop)
            except SourceError as exc:
                self._counts["errors"] += 1
                log.warning("camera lost: %s; reconnecting", exc)
                complained = True
            finally:
                self.camera_open = False
                source.close()
            stop.wait(retry)

    def _stream(self, source: FrameSource, stop: threading.Event) -> None:
        interval = 1.0 / self.settings.fps
        next_due = 0.0
        while not stop.is_set():
            self.last_loop = time.monotonic()
            frame = source.read()
            self._counts["read"] += 1
            # Keep the configured rate: a frame that comes before its slot is skipped (not queued).
            if frame.captured < next_due - 0.2 * interval:
                self._counts["skipped"] += 1
                self._maybe_report()
                continue
            next_due = max(next_due + interval, frame.captured)
            self.publish(frame)
            self._maybe_report()

    # -- one frame --------------------------------------------------------------------------------------------

    def publish(self, frame: Frame) -> None:
        image = frame.image
        height, width = image.shape[:2]
        if (width, height) != (self.settings.width, self.settings.height) and width > self.settings.width:
            scale = self.settings.width / width
            image = cv2.resize(image, (self.settings.width, round(height * scale)), interpolation=cv2.INTER_AREA)
            height, width = image.shape[:2]
        started = time.perf_counter()
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality])
        self._window["encode"].append(time.perf_counter() - started)
        if not ok:
            self._counts["errors"] += 1
            return
        self.sequence += 1
        properties = {CAPTURE_TIME: f"{frame.captured:.6f}", SEQUENCE: str(self.sequence), WIDTH: str(width),
                      HEIGHT: str(height)}  # fmt: skip
        self.bus.publish(self.bus.topics.camera_frame, jpeg.tobytes(), qos=0, user_properties=properties)
        self._counts["published"] += 1
        self._window["latency"].append(clock.now() - frame.captured)

    # -- stats ------------------------------------------------------------------------------------------------

    def figures(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._window_started, 1e-6)
        latency = self._window["latency"] or [0.0]
        encode = self._window["encode"] or [0.0]
        return {
            "camera_open": float(self.camera_open),
            "fps": self._counts["published"] / elapsed,
            "read_fps": self._counts["read"] / elapsed,
            "skipped": float(self._counts["skipped"]),
            "errors": float(self._counts["errors"]),
            "latency_ms_p50": 1000 * statistics.median(latency),
            "latency_ms_max": 1000 * max(latency),
            "encode_ms_p50": 1000 * statistics.median(encode),
            "sequence": float(self.sequence),
        }

    def _maybe_report(self) -> None:
        if time.monotonic() - self._window_started < self.settings.stats_interval:
            return
        stats = Stats(component=Component.CAMERA, instance=self.bus.instance, figures=self.figures())
        self.bus.publish(self.bus.topics.stats, stats.to_bytes(), qos=0)
        self._window = {"latency": [], "encode": []}
        self._counts = dict.fromkeys(self._counts, 0)
        self._window_started = time.monotonic()
