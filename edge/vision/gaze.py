"""Per-frame gaze features from MediaPipe FaceLandmarker (Tasks API, VIDEO mode).

MediaPipe gives landmarks (iris 468–477), 52 blendshapes and a head-pose matrix; it does not give gaze. These features
are what the liveness validator turns into screen cells (see ``edge.liveness``). Coordinates are those of the camera
image, not mirrored.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge.vision.gaze_net import GazeNet

# Landmark indices of the 478-point mesh. "Image-left eye" is the subject's right eye.
IMAGE_LEFT_EYE = {"left": 33, "right": 133, "top": 159, "bottom": 145, "iris": 468}
IMAGE_RIGHT_EYE = {"left": 362, "right": 263, "top": 386, "bottom": 374, "iris": 473}

BLINK_THRESHOLD = 0.45


@dataclass(frozen=True)
class GazeFrame:
    """Features of one frame. ``face`` is False when no face (or more than one) was found: then only ``t`` and
    ``faces`` mean anything."""

    t: float  # seconds since the first frame (presentation time)
    faces: int
    face: bool = False
    iris_x: float = 0.0  # iris position between the eye corners, 0 = image-left corner, 1 = image-right; both eyes
    iris_y: float = 0.0  # iris offset below the corner line, in eye widths; both eyes
    lid_y: float = 0.0  # iris position between upper (0) and lower (1) lid; both eyes
    look_x: float = 0.0  # blendshapes: + when the eyes turn towards the image's right
    look_y: float = 0.0  # blendshapes: + when the eyes look up
    yaw: float = 0.0  # head pose, degrees (+ = face turns towards the image's right)
    pitch: float = 0.0  # degrees (+ = up)
    roll: float = 0.0
    blink: float = 0.0  # max of the two eye-blink blendshapes
    face_width: float = 0.0  # pixels between the outer eye corners × 2 (a face-size proxy)
    face_x: float = 0.0  # face centre in the image, 0..1
    face_y: float = 0.0
    eye_width: float = 0.0  # pixels, mean of both eyes
    brightness: float | None = None  # mean luma (0-255) over the face's landmarks' box; None: not measured
    # The optional gaze network's vertical output (edge/vision/gaze_net.py), growing as the gaze moves down the screen;
    # None: not run on this frame. (Its horizontal output is weaker than the iris and not kept.)
    net_y: float | None = None

    @property
    def usable(self) -> bool:
        return self.face and self.blink < BLINK_THRESHOLD

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _eye(points: np.ndarray, eye: dict[str, int]) -> tuple[float, float, float, float]:
    left, right, iris = points[eye["left"]], points[eye["right"]], points[eye["iris"]]
    top, bottom = points[eye["top"]], points[eye["bottom"]]
    axis = right - left
    width = max(float(np.linalg.norm(axis)), 1e-6)
    unit = axis / width
    normal = np.array([-unit[1], unit[0]])  # points down the image
    x = float(np.dot(iris - left, unit)) / width
    y = float(np.dot(iris - (left + right) / 2, normal)) / width
    span = float(np.dot(bottom - top, normal))
    lid = float(np.dot(iris - top, normal)) / span if abs(span) > 1e-6 else 0.5
    return x, y, lid, width


def _angles(matrix: np.ndarray) -> tuple[float, float, float]:
    rotation = np.asarray(matrix)[:3, :3]
    yaw = math.degrees(math.atan2(-rotation[2, 0], math.hypot(rotation[2, 1], rotation[2, 2])))
    pitch = math.degrees(math.atan2(rotation[2, 1], rotation[2, 2]))
    roll = math.degrees(math.atan2(rotation[1, 0], rotation[0, 0]))
    return yaw, pitch, roll


def face_brightness(rgb: np.ndarray, points: np.ndarray) -> float:
    """Mean luma of the face (its landmarks' box, every 4th pixel each way: enough for a mean, ~0.1 ms)."""
    low = np.clip(points.min(axis=0).astype(int), 0, None)
    high = points.max(axis=0).astype(int) + 1
    patch = rgb[low[1] : high[1] : 4, low[0] : high[0] : 4].astype(np.float32)
    if patch.size == 0:
        return 0.0
    return float(np.mean(patch @ np.array([0.299, 0.587, 0.114], dtype=np.float32)))


def pixel_points(landmarks: list, width: int, height: int) -> np.ndarray:
    """One face's landmarks in pixels (MediaPipe gives them as fractions of the image)."""
    return np.array([[p.x * width, p.y * height] for p in landmarks], dtype=np.float64)


def features_from_result(result: object, t: float, width: int, height: int, points: np.ndarray | None) -> GazeFrame:
    """``points``: the ``pixel_points`` of the one face found (None unless exactly one was)."""
    landmarks = getattr(result, "face_landmarks", None) or []
    if len(landmarks) != 1 or points is None:
        return GazeFrame(t=t, faces=len(landmarks))
    lx, ly, llid, lw = _eye(points, IMAGE_LEFT_EYE)
    rx, ry, rlid, rw = _eye(points, IMAGE_RIGHT_EYE)
    shapes = {c.category_name: c.score for c in result.face_blendshapes[0]} if result.face_blendshapes else {}
    # The subject's left eye is on the image's right: "look out" of it turns the gaze towards the image's right.
    look_x = (
        shapes.get("eyeLookOutLeft", 0) - shapes.get("eyeLookInLeft", 0)
        + shapes.get("eyeLookInRight", 0) - shapes.get("eyeLookOutRight", 0)
    ) / 2  # fmt: skip
    look_y = (
        shapes.get("eyeLookUpLeft", 0) + shapes.get("eyeLookUpRight", 0)
        - shapes.get("eyeLookDownLeft", 0) - shapes.get("eyeLookDownRight", 0)
    ) / 2  # fmt: skip
    matrices = getattr(result, "facial_transformation_matrixes", None) or []
    yaw, pitch, roll = _angles(matrices[0]) if matrices else (0.0, 0.0, 0.0)
    outer = points[IMAGE_RIGHT_EYE["right"]] - points[IMAGE_LEFT_EYE["left"]]
    centre = points.mean(axis=0)
    return GazeFrame(
        t=t, faces=1, face=True,
        iris_x=(lx + rx) / 2, iris_y=(ly + ry) / 2, lid_y=(llid + rlid) / 2,
        look_x=look_x, look_y=look_y, yaw=yaw, pitch=pitch, roll=roll,
        blink=max(shapes.get("eyeBlinkLeft", 0), shapes.get("eyeBlinkRight", 0)),
        face_width=2 * float(np.linalg.norm(outer)), face_x=float(centre[0] / width), face_y=float(centre[1] / height),
        eye_width=(lw + rw) / 2,
    )  # fmt: skip


def _import_mediapipe():
    # mediapipe imports TensorFlow when it is installed (for tools the Tasks API never uses): ~4 s and hundreds of
    # MB in this process. Hiding it makes that import fail softly inside mediapipe.
    hidden = "tensorflow" not in sys.modules
    if hidden:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
    finally:
        if hidden:
            del sys.modules["tensorflow"]
    return mp, vision, BaseOptions


# What MediaPipe's native code prints on stderr while a FaceLandmarker starts, on every liveness check: glog/absl
# lines (W0000 …, "Logging before InitGoogle()") and TensorFlow Lite's "INFO: Created … delegate".
_NATIVE_NOISE = re.compile(rb"^(WARNING: Logging before InitGoogle|[IWE]\d{4} |INFO: Created TensorFlow Lite)")


# One redirection at a time: two overlapping ones would restore each other's temporary file as stderr.
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Hold back MediaPipe's start-up noise from file descriptor 2 (native code writes there directly); any other
    line written meanwhile, by this or another thread, is passed on afterwards, so nothing is lost."""
    with _STDERR_LOCK, _held_stderr():
        yield


@contextlib.contextmanager
def _held_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if not _NATIVE_NOISE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


class GazeTracker:
    """One FaceLandmarker in VIDEO mode: frames of one video, in order, with increasing timestamps."""

    def __init__(self, model: Path, gaze_net: GazeNet | None = None):
        """With ``gaze_net``, ``track(..., with_net=True)`` runs the gaze network on that frame too."""
        self._mp, vision, base_options = _import_mediapipe()
        self._net = gaze_net
        options = vision.FaceLandmarkerOptions(
            base_options=base_options(model_asset_path=str(model)),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=2,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        with _quiet_native_stderr():
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._last_ms = -1
        # The 478 landmarks (pixels) of the last frame with exactly one face, for the motion cues of anti-spoofing.
        self.last_points: np.ndarray | None = None

    def track(self, rgb: np.ndarray, t: float, with_net: bool = False) -> GazeFrame:
        stamp = max(round(t * 1000), self._last_ms + 1)  # MediaPipe wants strictly increasing timestamps
        self._last_ms = stamp
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._landmarker.detect_for_video(image, stamp)
        height, width = rgb.shape[:2]
        faces = result.face_landmarks or []
        points = pixel_points(faces[0], width, height) if len(faces) == 1 else None
        self.last_points = None if points is None else points.astype(np.float32)
        features = features_from_result(result, t, width, height, points)
        if self.last_points is not None:
            features = replace(features, brightness=face_brightness(rgb, self.last_points))
            if with_net and self._net is not None:
                estimate = self._net.estimate(rgb, self.last_points)
                if estimate is not None:
                    features = replace(features, net_y=-estimate[1])
        return features

    def close(self) -> None:
        self._landmarker.close()

    def __enter__(self) -> GazeTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
