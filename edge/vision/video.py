"""Video decoding for challenge scoring: frames with presentation timestamps, bounded work.

OpenCV (FFmpeg inside the wheel) decodes what browsers record (VP8/VP9 WebM, H.264 MP4/MKV) and what the camera daemon
writes. MediaRecorder WebM files report a nonsense frame count and may have a variable frame rate, so frames are read
to the end and timed by their presentation timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAX_FRAMES = 900  # 30 s at 30 fps: far more than any challenge
MAX_SIDE = 640  # frames are scaled down to this longest side before landmarks


class VideoError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Frame:
    t: float  # seconds since the first frame
    rgb: np.ndarray


def read_frames(
    path: Path,
    *,
    max_frames: int = MAX_FRAMES,
    max_side: int = MAX_SIDE,
    max_seconds: float | None = None,
    interval: float = 0.0,
) -> Iterator[Frame]:
    """Yield RGB frames with their timestamps, at most ``max_frames`` decoded and up to ``max_seconds`` of video.

    With ``interval``, frames closer than that to the last yielded one are decoded but not converted or yielded:
    time-based, so a variable frame rate gives evenly spaced frames.
    """
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError("invalid_video", "the file is not a video OpenCV can decode")
    try:
        first_ms: float | None = None
        previous = -1.0
        count = 0
        fps = capture.get(cv2.CAP_PROP_FPS)
        fallback_step = 1.0 / fps if 1 <= fps <= 240 else 1.0 / 30
        last_yielded = -math.inf
        while count < max_frames:
            if not capture.grab():
                break
            stamp_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            if first_ms is None:
                first_ms = stamp_ms
            t = (stamp_ms - first_ms) / 1000.0
            if t <= previous:  # a container without usable timestamps: fall back to the nominal rate
                t = previous + fallback_step
            if max_seconds is not None and t > max_seconds:
                break
            previous = t
            count += 1
            if t - last_yielded < 0.9 * interval:  # 0.9: jitter in the timestamps must not drop every other frame
                continue
            last_yielded = t
            ok, bgr = capture.retrieve()
            if not ok:
                break
            height, width = bgr.shape[:2]
            if max(height, width) > max_side:
                scale = max_side / max(height, width)
                bgr = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            yield Frame(t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if count == 0:
            raise VideoError("invalid_video", "the video has no decodable frame")
    finally:
        capture.release()
