"""Video-level presentation-attack detection: cues a photo or a screen cannot fake, over the whole challenge.

Measured with ``facematch bench pad --video`` (figures in docs/LIVENESS.md); the verdict names the cue that failed.

- texture (decisive): the MiniFASNet live probability, averaged over frames sampled through the challenge. The
  webcam recordings here score real people as low as 0.014, so the video threshold is far below the photo one;
- screen pattern (decisive): the moiré of a filmed screen, from the spectra of the window around the face averaged
  over the same frames (``edge.vision.moire``);
- picture motion (decisive when it has an opinion): a picture moved by hand in front of a fixed camera moves as one
  plane with the paper around the face, a real head moves against a background that stays (``edge.vision.motion``).
  It has no opinion when the face hardly moves or when the whole scene moves (a hand-held camera, or a picture
  filling the entire view): the gaze challenge covers those;
- planar motion of the landmarks (reported, not decisive): a printed photo moved by hand moves as one plane, so the
  landmarks of two frames should fit a homography, while a turning head shows parallax. It does not separate at
  these face sizes: MediaPipe fits its 3D face to a tilted photo too (ratio ~0.63 under an extreme tilt, against
  ~0.75 for a person), and optical-flow tracks on the face alone barely leave a similarity under a hand's tilt: over
  a 60-130 px face a homography is locally a similarity. The plane shows once the face's surroundings are included
  (picture motion, above);
- blinks: counted and reported (a photo never blinks, but people may not blink in 9 s either: not a verdict).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.vision.moire import screen_pattern_score
from edge.vision.motion import MotionSample, picture_motion

TEXTURE = "antispoof_texture"
SCREEN_PATTERN = "screen_pattern"
MOVES_AS_PICTURE = "moves_as_picture"
NOT_SCORED = "antispoof_not_scored"

# Each reason: what was found, and what the person can do next.
MESSAGES = {
    TEXTURE: (
        "the anti-spoofing model found the face printed or on a screen",
        "present your own face to the camera, not a photo or a screen; more light helps",
    ),
    SCREEN_PATTERN: (
        "the picture around the face shows the fine periodic pattern of a filmed screen",
        "present your own face to the camera, not a screen",
    ),
    MOVES_AS_PICTURE: (
        "the face moved together with its surroundings, as a picture held in front of the camera does",
        "present your own face to the camera, not a picture",
    ),
    NOT_SCORED: (
        "too few frames showed a face the anti-spoofing check could judge",
        "keep your whole face in view of the camera, in good light",
    ),
}

# Mesh points that stay put on a face whatever the eyes and mouth do (forehead, cheeks, nose, jaw, temples).
STABLE_POINTS = np.array(
    [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149,
     150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109, 1, 4, 5, 195, 197, 6, 168, 98, 327, 50, 280,
     205, 425, 36, 266]
)  # fmt: skip


@dataclass(frozen=True)
class PresentationParams:
    # Configured (liveness.video_antispoof_threshold, liveness.screen_pattern_threshold): defaults in edge/config.py.
    texture_threshold: float
    screen_pattern_threshold: float
    # Below it the face and its surroundings moved as one plane: held pictures score ~0.01 (tracker noise), people
    # above ~0.13 (edge.vision.motion; bench pad --video). Paper bending in a hand is not simulated: room is left.
    picture_motion_threshold: float = 0.06
    min_texture_frames: int = 2
    min_off_similarity: float = 0.012  # motion beyond a similarity, in face widths, for the planar ratio to exist


@dataclass
class PresentationEvidence:
    """What the scorer samples through a challenge video."""

    live_probabilities: list[float] = field(default_factory=list)  # MiniFASNet, about one frame a second
    screen_spectra: list[np.ndarray] = field(default_factory=list)  # around the face, the same frames (moire.py)
    point_sets: list[np.ndarray] = field(default_factory=list)  # landmarks, every half second
    motion_samples: list[MotionSample] = field(default_factory=list)  # grey frames and face boxes, the same times
    blink_scores: list[float] = field(default_factory=list)  # every tracked frame with a face
    # picture_motion(motion_samples), when the scorer worked it out as the samples came (edge.vision.motion.MotionPairs)
    picture_motion: tuple[float | None, int] | None = None


@dataclass
class PresentationVerdict:
    passed: bool
    live_probability: float | None
    frames_scored: int
    screen_pattern: float | None
    picture_motion: float | None
    planar_ratio: float | None
    blinks: int
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "checked": True,
            "passed": self.passed,
            "live_probability": None if self.live_probability is None else round(self.live_probability, 4),
            "frames_scored": self.frames_scored,
            "screen_pattern": None if self.screen_pattern is None else round(self.screen_pattern, 3),
            "picture_motion": None if self.picture_motion is None else round(self.picture_motion, 3),
            "planar_motion_ratio": None if self.planar_ratio is None else round(self.planar_ratio, 4),
            "blinks": self.blinks,
            "reasons": [{"code": r, "message": MESSAGES[r][0], "hint": MESSAGES[r][1]} for r in self.reasons],
        }


def _residual(src: np.ndarray, dst: np.ndarray, matrix: np.ndarray, projective: bool) -> float:
    ones = np.ones((len(src), 1), np.float32)
    mapped = np.hstack([src, ones]) @ matrix.T
    if projective:
        mapped = mapped[:, :2] / mapped[:, 2:3]
    return float(np.sqrt(np.mean(np.sum((mapped[:, :2] - dst) ** 2, axis=1))))


def planar_ratio(point_sets: list[np.ndarray], params: PresentationParams) -> float | None:
    """Median over frame pairs of (homography residual / similarity residual), for pairs that moved enough."""
    ratios = []
    for a, b in itertools.pairwise(point_sets):
        src, dst = a[STABLE_POINTS], b[STABLE_POINTS]
        width = float(np.ptp(src[:, 0])) or 1.0
        similarity, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        homography, _ = cv2.findHomography(src, dst, 0)
        if similarity is None or homography is None:
            continue
        off_similarity = _residual(src, dst, similarity, projective=False) / width
        if off_similarity < params.min_off_similarity:
            continue
        ratios.append(_residual(src, dst, homography, projective=True) / width / off_similarity)
    return float(np.median(ratios)) if ratios else None


def count_blinks(blink_scores: list[float], threshold: float = 0.45) -> int:
    closed = [score >= threshold for score in blink_scores]
    return sum(1 for before, now in itertools.pairwise(closed) if now and not before)


def judge(evidence: PresentationEvidence, params: PresentationParams) -> PresentationVerdict:
    reasons = []
    scored = len(evidence.live_probabilities)
    live = float(np.mean(evidence.live_probabilities)) if scored else None
    if scored < params.min_texture_frames:
        reasons.append(NOT_SCORED)  # no opinion is not a pass: a door must not open unjudged
    elif live is not None and live < params.texture_threshold:
        reasons.append(TEXTURE)
    screen = screen_pattern_score(evidence.screen_spectra)
    enough_screen = len(evidence.screen_spectra) >= params.min_texture_frames
    if screen is not None and enough_screen and screen > params.screen_pattern_threshold:
        reasons.append(SCREEN_PATTERN)
    follow, _ = evidence.picture_motion or picture_motion(evidence.motion_samples)
    if follow is not None and follow < params.picture_motion_threshold:
        reasons.append(MOVES_AS_PICTURE)
    ratio = planar_ratio(evidence.point_sets, params)
    blinks = count_blinks(evidence.blink_scores)
    return PresentationVerdict(not reasons, live, scored, screen, follow, ratio, blinks, reasons)
