"""Does the face move together with its surroundings while the scene stays put?

A photo moved by hand in front of a fixed camera carries the paper around the face with it: what surrounds the face
follows the face's own motion. A real head moves against a background that stays where it is. Points are tracked
with pyramidal Lucas-Kanade optical flow (checked forwards and backwards) in three regions of each frame pair: the
face, a ring around it, and the scene beyond. The face's motion is fitted by a similarity; the score of a pair is how
far the ring's points land from where that similarity would carry them, in units of the face's motion — near 0 when
the ring follows the face, near 1 when it stays behind.

A pair says nothing when the face hardly moved, when the scene near it moved as well (a hand-held camera, or a picture
that fills the frame: the two look alike), or when a region has too few trackable points (a blank wall).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

MIN_FACE_MOTION = 0.03  # face widths between two samples for the pair to count
MAX_SCENE_MOTION = 0.3  # the scene may move this share of the face's motion and still count as still
MIN_POINTS = 10  # trackable points each region needs
FLOW = {"winSize": (15, 15), "maxLevel": 2}
BACKTRACK_PX = 0.7
PAIR_WORKERS = 2


@dataclass(frozen=True)
class MotionSample:
    gray: np.ndarray
    box: tuple[float, float, float, float]  # x, y, w, h of the face


def _ellipse(shape: tuple[int, ...], centre: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (max(1, int(axes[0])), max(1, int(axes[1]))), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def surroundings_follow(a: MotionSample, b: MotionSample) -> float | None:
    """How far the ring around the face stays behind the face's motion from ``a`` to ``b`` (None: no opinion)."""
    x, y, w, h = a.box
    first, second, centre = a.gray, b.gray, (x + w / 2, y + h / 2)
    regions = {
        "face": _ellipse(first.shape, centre, (0.45 * w, 0.55 * h)),
        "ring": _ellipse(first.shape, centre, (1.1 * w, 1.1 * h)) & ~_ellipse(first.shape, centre, (0.7 * w, 0.75 * h)),
        # The scene is everything further out: near the face it would include the shoulders, which follow the head.
        "scene": ~_ellipse(first.shape, centre, (1.6 * w, 1.6 * h)),
    }
    # Corners are picked per region (the scene's strong edges would otherwise take them all) and tracked in one pass;
    # the face and ring are searched in their own box, the scene at half resolution: a pair costs ~5 ms.
    height, width = first.shape[:2]
    left, top = max(0, int(centre[0] - 1.1 * w)), max(0, int(centre[1] - 1.1 * h))
    right, bottom = min(width, int(centre[0] + 1.1 * w) + 1), min(height, int(centre[1] + 1.1 * h) + 1)
    picked = []
    for name, count in (("face", 80), ("ring", 120)):
        mask = regions[name][top:bottom, left:right].astype(np.uint8)
        corners = cv2.goodFeaturesToTrack(first[top:bottom, left:right], count, 0.01, 4, mask=mask)
        picked.append(None if corners is None else corners + np.float32([left, top]))
    half = (width // 2, height // 2)
    half_mask = cv2.resize(regions["scene"].astype(np.uint8), half, interpolation=cv2.INTER_NEAREST)
    corners = cv2.goodFeaturesToTrack(cv2.pyrDown(first, dstsize=half), 100, 0.01, 3, mask=half_mask)
    picked.append(None if corners is None else corners * 2)
    if any(p is None for p in picked):
        return None
    points = np.concatenate(picked).astype(np.float32)
    ahead, found, _ = cv2.calcOpticalFlowPyrLK(first, second, points, None, **FLOW)
    back, returned, _ = cv2.calcOpticalFlowPyrLK(second, first, ahead, None, **FLOW)
    good = (found[:, 0] == 1) & (returned[:, 0] == 1) & (np.linalg.norm((back - points)[:, 0], axis=1) < BACKTRACK_PX)
    start, end = points[good, 0], ahead[good, 0]
    column, row = start[:, 0].astype(int), start[:, 1].astype(int)
    moved = {}
    for name, mask in regions.items():
        inside = mask[row, column]
        if inside.sum() < MIN_POINTS:
            return None
        moved[name] = (start[inside], end[inside])
    face_motion = float(np.median(np.linalg.norm(moved["face"][1] - moved["face"][0], axis=1)))
    if face_motion < MIN_FACE_MOTION * w:
        return None
    scene_motion = float(np.median(np.linalg.norm(moved["scene"][1] - moved["scene"][0], axis=1)))
    if scene_motion > MAX_SCENE_MOTION * face_motion:
        return None
    similarity, _ = cv2.estimateAffinePartial2D(*moved["face"], method=cv2.LMEDS)
    if similarity is None:
        return None
    ring_start, ring_end = moved["ring"]
    carried = ring_start @ similarity[:, :2].T + similarity[:, 2]
    return float(np.median(np.linalg.norm(ring_end - carried, axis=1))) / face_motion


def picture_motion(samples: list[MotionSample], min_pairs: int = 3) -> tuple[float | None, int]:
    """Median of ``surroundings_follow`` over consecutive samples, and how many pairs had an opinion."""
    # OpenCV releases the GIL: the pairs are split over the cores, which are free once tracking has ended.
    with ThreadPoolExecutor(PAIR_WORKERS) as pool:
        scores = [
            s for s in pool.map(lambda pair: surroundings_follow(*pair), itertools.pairwise(samples)) if s is not None
        ]
    return (float(np.median(scores)) if len(scores) >= min_pairs else None), len(scores)
