"""An optional learned gaze network (GazeFollower's MGazeNet, ``base.mnn``) as a second source of gaze evidence.

It looks at the face and both eyes as images, where the iris features look at a few landmarks; measured on the
EyeGaze recordings it tells the rows apart far better than the iris does (docs/LIVENESS.md). Its weights are
licensed CC-BY-NC-SA 4.0 (non-commercial), so it is off by default and needs ``pip install MNN`` and
``facematch models fetch gaze_net``.

The crops are the ones the network was trained with (GazeFollower's MediaPipe aligner), made from the
FaceLandmarker landmarks the tracker already has: no second face alignment runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

# FaceLandmarker indices: eye corners (image-left eye 33/133, image-right eye 362/263) and the lips, as GazeFollower's
# aligner uses them.
LEFT_CORNERS, RIGHT_CORNERS = (33, 133), (362, 263)
LIPS = [61, 91, 14, 178, 402, 324, 95]
FACE_SIZE, EYE_SIZE = 224, 112


class GazeNetUnavailable(RuntimeError):
    pass


def import_mnn():
    try:
        # MNN prints the CPU's features on stdout when it is imported: kept out of the product's output.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_fd1():
            import MNN
    except ImportError as exc:
        raise GazeNetUnavailable("the gaze network needs the MNN runtime: pip install MNN") from exc
    return MNN


# One redirection at a time: two overlapping ones would leave /dev/null as the process's stdout.
_STDOUT_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_fd1() -> Iterator[None]:
    """File descriptor 1 to /dev/null for the block (MNN's native code prints there directly)."""
    with _STDOUT_LOCK, open(os.devnull, "wb") as null:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def crops(points: np.ndarray, width: int, height: int) -> tuple[tuple[int, int, int, int], ...] | None:
    """(face, image-left eye, image-right eye) rectangles as (x, y, w, h), or None when the mouth is off the image
    (the network was not trained on such faces)."""
    if float(np.mean(points[LIPS, 1])) >= height:
        return None
    low = np.clip(points.min(axis=0), 0, None)
    high = np.minimum(points.max(axis=0), [width, height])
    face_w, face_h = high - low
    delta = (face_w - face_h) / 4  # squares the box around the landmarks
    x0, y0 = max(low[0] + delta, 0), max(low[1] - delta, 0)
    x1, y1 = min(high[0] - delta, width - 1), min(high[1] + delta, height - 1)
    scale = abs(points[RIGHT_CORNERS[0], 0] - points[LEFT_CORNERS[1], 0]) / 100
    eyes = []
    for outer, inner in (LEFT_CORNERS, RIGHT_CORNERS):
        ex0, ex1 = points[outer, 0] - 20 * scale, points[inner, 0] + 20 * scale
        eye_h = abs(ex1 - ex0) * 0.75
        centre_y = (points[outer, 1] + points[inner, 1]) / 2
        ey0, ey1 = centre_y - 0.6 * eye_h, centre_y + 0.4 * eye_h  # more room below the eye than above
        eyes.append((int(ex0), int(ey0), int(ex1) - int(ex0), int(ey1) - int(ey0)))
    face = (int(x0), int(y0), int(x1) - int(x0), int(y1) - int(y0))
    return face, eyes[0], eyes[1]


def _patch(rgb: np.ndarray, rect: tuple[int, int, int, int], size: int) -> np.ndarray | None:
    x, y, w, h = rect
    if w <= 1 or h <= 1 or x < 0 or y < 0 or x + w > rgb.shape[1] or y + h > rgb.shape[0]:
        return None
    return cv2.resize(rgb[y : y + h, x : x + w], (size, size)).astype(np.float32) / 255.0


class GazeNet:
    """One loaded network; ``estimate`` gives its two gaze outputs for one frame (not thread-safe: one per tracker)."""

    def __init__(self, weights: Path):
        mnn = import_mnn()
        if not weights.exists():
            raise GazeNetUnavailable(
                f"the gaze network's weights are missing: {weights} (facematch models fetch gaze_net)"
            )
        with _quiet_fd1():  # MNN says "MNN use low precision" on stdout
            # One thread: the scorer's tracking lanes already use a core each.
            runtime = mnn.nn.create_runtime_manager(({"precision": "low", "backend": 0, "numThread": 1},))
            self._module = mnn.nn.load_module_from_file(
                str(weights), ["face", "left", "right", "rect"], ["output_0"], runtime_manager=runtime
            )
        nhwc = mnn.expr.NHWC
        self._face = mnn.expr.placeholder((1, FACE_SIZE, FACE_SIZE, 3), nhwc)
        self._left = mnn.expr.placeholder((1, EYE_SIZE, EYE_SIZE, 3), nhwc)
        self._right = mnn.expr.placeholder((1, EYE_SIZE, EYE_SIZE, 3), nhwc)
        self._rect = mnn.expr.placeholder((1, 12))

    def estimate(self, rgb: np.ndarray, points: np.ndarray) -> tuple[float, float] | None:
        """The network's (x, y) for the face whose 478 landmarks (pixels) are ``points``; None when its crops do not
        fit in the image."""
        height, width = rgb.shape[:2]
        rects = crops(points, width, height)
        if rects is None:
            return None
        face, left, right = rects
        patches = [_patch(rgb, face, FACE_SIZE), _patch(rgb, left, EYE_SIZE), _patch(rgb, right, EYE_SIZE)]
        if any(p is None for p in patches):
            return None
        face_patch, left_patch, right_patch = patches
        boxes = np.array([v for rect in rects for v in (rect[2], rect[3], rect[0], rect[1])], dtype=np.float32)
        self._face.write(face_patch)
        self._left.write(left_patch)
        self._right.write(cv2.flip(right_patch, 1))  # the network sees both eyes as left eyes
        self._rect.write((boxes / np.array([width, height] * 6, dtype=np.float32)).reshape(1, 12))
        output = self._module.onForward([self._face, self._left, self._right, self._rect])[0].read()
        x, y = np.asarray(output, dtype=np.float32).reshape(-1)[:2]
        return float(x), float(y)


class GazeNetPool:
    """Networks for trackers that run at once, each loaded once: a tracker borrows one for a whole video."""

    def __init__(self, weights: Path):
        self.weights = weights
        self._idle: queue.SimpleQueue[GazeNet] = queue.SimpleQueue()
        self._idle.put(GazeNet(weights))  # a missing runtime or file is said at start-up, not at the first video

    @contextlib.contextmanager
    def lend(self) -> Iterator[GazeNet]:
        try:
            net = self._idle.get_nowait()
        except queue.Empty:
            net = GazeNet(self.weights)
        try:
            yield net
        finally:
            self._idle.put(net)
