"""Does the face move as one plane with its surroundings, while the camera stays put?

A photo moved by hand in front of a fixed camera carries the paper around the face with it: the face and what
surrounds it move as one plane, which a single homography maps from frame to frame up to the tracker's noise. A real
head moves against a background that stays where it is, and no homography maps a moving face and a still ring around
it at once. Points are tracked with pyramidal Lucas-Kanade optical flow (checked forwards and backwards) in three
regions of each frame pair: the face, a ring around it, and the scene beyond. The score of a pair is the residual of
one least-squares homography fitted to the face and the ring together (the worse of the two regions' medians), in
units of the face's motion: ~0.01 for a held picture, above ~0.13 for a person (``facematch bench pad --video``).

The cue needs a fixed camera: a hand-held one moves the face and its surroundings together, as a picture does. A
moving camera moves every point of the scene, so a pair says nothing unless the scene far from the face stayed put or
some of the scene stayed exactly still (a picture that fills most of the view but leaves a strip of the room in
sight is judged; one that fills all of it looks like a hand-held phone and is not). A pair also says nothing when
the face hardly moved, or when a region has too few trackable points (a blank wall).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

MIN_FACE_MOTION = 0.03  # face widths between two samples for the pair to count
FAR_SCENE = 1.6  # face sizes: beyond this the scene no longer includes the shoulders, which follow the head
MAX_FAR_SCENE_MOTION = 0.3  # the far scene may move this share of the face's motion and still count as put
STILL_PX = 0.5  # a scene point that moved less than this (pixels) between two samples stayed where it was
# This share of still scene points shows the camera did not move (a hand-held camera's pairs here: at most 1 of ~140
# points; a sheet covering most of the view: 5-27 %).
MIN_STILL_SHARE = 0.05
SCENE_GRID, SCENE_CORNERS_PER_CELL = 8, 4  # a plain strip of wall gets cells of its own
TRIM_PASSES = 2  # refits without the worst tracks (a point on the head's outline belongs to neither side)
TRIM_FLOOR_PX = 0.5  # tracker noise: a point this close to the fit is never trimmed
MIN_POINTS = 10  # trackable points each region needs
FLOW = {"winSize": (15, 15), "maxLevel": 2}
BACKTRACK_PX = 0.7


@dataclass(frozen=True)
class MotionSample:
    gray: np.ndarray
    box: tuple[float, float, float, float]  # x, y, w, h of the face


def _ellipse(shape: tuple[int, ...], centre: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (max(1, int(axes[0])), max(1, int(axes[1]))), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def one_plane_residual(a: MotionSample, b: MotionSample) -> float | None:
    """How far the face and the ring around it are from moving as one plane from ``a`` to ``b``, in units of the
    face's motion (None: no opinion)."""
    x, y, w, h = a.box
    first, second, centre = a.gray, b.gray, (x + w / 2, y + h / 2)
    # Corners are picked per region (the scene's strong edges would otherwise take them all); the face and ring are
    # searched in their own box, the scene at half resolution.
    height, width = first.shape[:2]
    left, top = max(0, int(centre[0] - 1.1 * w)), max(0, int(centre[1] - 1.1 * h))
    right, bottom = min(width, int(centre[0] + 1.1 * w) + 1), min(height, int(centre[1] + 1.1 * h) + 1)

    def corners_in(region: np.ndarray, count: int) -> np.ndarray | None:
        mask = region[top:bottom, left:right].astype(np.uint8)
        corners = cv2.goodFeaturesToTrack(first[top:bottom, left:right], count, 0.01, 4, mask=mask)
        return None if corners is None else corners + np.float32([left, top])

    # The face is tracked first and alone: a face that hardly moved ends the pair there, before the other regions are
    # even drawn, and a person keeping still for the challenge is most pairs (optical flow tracks each point on its
    # own, so nothing else changes).
    face_region = _ellipse(first.shape, centre, (0.45 * w, 0.55 * h))
    face = _tracked(first, second, [corners_in(face_region, 80)], {"face": face_region})
    if face is None:
        return None
    face_motion = float(np.median(np.linalg.norm(face["face"][1] - face["face"][0], axis=1)))
    if face_motion < MIN_FACE_MOTION * w:
        return None
    outside = ~_ellipse(first.shape, centre, (1.1 * w, 1.1 * h))
    around = {
        "ring": ~outside & ~_ellipse(first.shape, centre, (0.7 * w, 0.75 * h)),
        "scene": outside,  # shoulders too: only its still points count
    }
    surroundings = _tracked(
        first, second, [corners_in(around["ring"], 120), _scene_corners(first, around["scene"])], around
    )
    if surroundings is None:
        return None
    moved = face | surroundings
    if not _camera_stayed(*moved["scene"], first.shape, centre, (w, h), face_motion):
        return None
    residuals = _plane_residuals(np.vstack([moved["face"][0], moved["ring"][0]]),
                                 np.vstack([moved["face"][1], moved["ring"][1]]))  # fmt: skip
    if residuals is None:
        return None
    faces = len(moved["face"][0])
    return max(float(np.median(residuals[:faces])), float(np.median(residuals[faces:]))) / face_motion


def _tracked(
    first: np.ndarray, second: np.ndarray, corners: list[np.ndarray | None], regions: dict[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Where the corners went (checked forwards and backwards), by the region each starts in; None when some corners
    could not be picked or a region keeps too few of them."""
    if any(c is None for c in corners):
        return None
    points = np.concatenate(corners).astype(np.float32)  # type: ignore[arg-type]
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
    return moved


def _camera_stayed(
    start: np.ndarray,
    end: np.ndarray,
    shape: tuple[int, ...],
    centre: tuple[float, float],
    size: tuple[float, float],
    face_motion: float,
) -> bool:
    """Whether the scene shows a fixed camera: the scene far from the face (beyond the shoulders) stayed put as a
    whole, or some of the scene beyond the ring stayed exactly still (a strip of wall beside a picture that fills most
    of the view). A moving camera moves all of it."""
    shift = np.linalg.norm(end - start, axis=1)
    if np.mean(shift < STILL_PX) >= MIN_STILL_SHARE:
        return True
    far = ~_ellipse(shape, centre, (FAR_SCENE * size[0], FAR_SCENE * size[1]))
    far_shift = shift[far[start[:, 1].astype(int), start[:, 0].astype(int)]]
    return len(far_shift) >= MIN_POINTS and float(np.median(far_shift)) <= MAX_FAR_SCENE_MOTION * face_motion


def _scene_corners(gray: np.ndarray, scene: np.ndarray) -> np.ndarray | None:
    """Corners of the scene, picked cell by cell of a grid at half resolution: a plain wall beside a held picture
    still gets its share (picked over the whole scene, the picture's sharper detail would take every corner, and a
    still room would go unseen)."""
    height, width = gray.shape[:2]
    small = cv2.pyrDown(gray, dstsize=(width // 2, height // 2))
    mask = cv2.resize(scene.astype(np.uint8), (width // 2, height // 2), interpolation=cv2.INTER_NEAREST)
    found = []
    rows, columns = (
        np.linspace(0, small.shape[0], SCENE_GRID + 1, dtype=int),
        np.linspace(0, small.shape[1], SCENE_GRID + 1, dtype=int),
    )
    for top, bottom in itertools.pairwise(rows):
        for left, right in itertools.pairwise(columns):
            if not mask[top:bottom, left:right].any():
                continue
            corners = cv2.goodFeaturesToTrack(
                small[top:bottom, left:right], SCENE_CORNERS_PER_CELL, 0.01, 3, mask=mask[top:bottom, left:right]
            )
            if corners is not None:
                found.append((corners + np.float32([left, top])) * 2)
    return np.concatenate(found) if found else None


def _plane_residuals(start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """Each point's distance from where one homography, fitted by least squares to the points, carries it."""
    keep = np.ones(len(start), bool)
    residuals = None
    for _ in range(TRIM_PASSES + 1):
        homography, _ = cv2.findHomography(start[keep], end[keep], 0)
        if homography is None:
            return None
        carried = cv2.perspectiveTransform(start[None].astype(np.float64), homography)[0]
        residuals = np.linalg.norm(carried - end, axis=1)
        keep = residuals < max(3 * float(np.median(residuals)), TRIM_FLOOR_PX)
        if keep.sum() < 8:
            break
    return residuals


def picture_motion(samples: list[MotionSample], min_pairs: int = 3) -> tuple[float | None, int]:
    """Median of ``one_plane_residual`` over consecutive samples, and how many pairs had an opinion."""
    pairs = MotionPairs()
    for sample in samples:
        pairs.add(lambda sample=sample: sample)
    return pairs.result(min_pairs)


def summarise(scores: list[float | None], min_pairs: int = 3) -> tuple[float | None, int]:
    """The picture-motion figure of the pairs' scores: their median once enough pairs have an opinion."""
    opinions = [s for s in scores if s is not None]
    return (float(np.median(opinions)) if len(opinions) >= min_pairs else None), len(opinions)


class MotionPairs:
    """``picture_motion`` worked out while the samples come in, one pair as soon as its second sample is there (on a
    thread of its own): at the end of a streamed challenge only the last pair is left to do, not all twenty."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="motion-pairs")  # one: the pairs are made in order
        self._last: MotionSample | None = None
        self._scores: list[Future[float | None]] = []

    def add(self, sample: Callable[[], MotionSample | None]) -> None:
        """The next sample in time, as a call that waits for it (None: the frame had no face, and makes no pair)."""
        self._scores.append(self._pool.submit(self._pair_with_last, sample))

    def _pair_with_last(self, sample: Callable[[], MotionSample | None]) -> float | None:
        current = sample()
        if current is None:
            return None
        previous, self._last = self._last, current
        return None if previous is None else one_plane_residual(previous, current)

    def result(self, min_pairs: int = 3) -> tuple[float | None, int]:
        try:
            return summarise([future.result() for future in self._scores], min_pairs)
        finally:
            self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
