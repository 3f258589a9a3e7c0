"""Quality checks with named reasons. A probe that fails one is refused, with the reason, before matching."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.vision.align import align
from edge.vision.types import Face

NO_FACE = "no_face"
MULTIPLE_FACES = "multiple_faces"
FACE_TOO_SMALL = "face_too_small"
TOO_BLURRY = "too_blurry"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
POSE_NOT_FRONTAL = "pose_not_frontal"

# Reasons that refuse an image; MULTIPLE_FACES only warns (the most prominent face is used, and the response says so).
BLOCKING = (NO_FACE, FACE_TOO_SMALL, TOO_BLURRY, TOO_DARK, TOO_BRIGHT, POSE_NOT_FRONTAL)

MESSAGES = {
    NO_FACE: "no face was found",
    MULTIPLE_FACES: "several faces were found; the most prominent (largest, nearest the centre) was used",
    FACE_TOO_SMALL: "the face is too small",
    TOO_BLURRY: "the face is too blurry",
    TOO_DARK: "the face is too dark",
    TOO_BRIGHT: "the face is too bright",
    POSE_NOT_FRONTAL: "the head is turned too far from the camera",
}


@dataclass(frozen=True)
class QualityLimits:
    min_eye_distance: float = 16.0  # pixels between the eye centres (LFW's 150-px thumbnails have ~25)
    min_sharpness: float = 12.0  # variance of the Laplacian on the aligned 112×112 grey crop
    min_brightness: float = 40.0  # mean grey level of the aligned face, 0..255
    max_brightness: float = 220.0
    max_yaw: float = 0.5  # horizontal nose offset from the eye midpoint, in eye distances (~40°)
    max_pitch: float = 0.25  # deviation of the nose height between eyes and mouth from frontal, in that span


@dataclass
class QualityReport:
    faces_found: int
    metrics: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(reason in BLOCKING for reason in self.reasons)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "faces_found": self.faces_found,
            "reasons": [{"code": r, "message": MESSAGES[r]} for r in self.reasons],
            "metrics": {k: round(v, 3) for k, v in self.metrics.items()},
        }


def pose_ratios(face: Face) -> tuple[float, float]:
    """(yaw, pitch) from the landmarks alone: 0 for a frontal face; the sign says which way."""
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks.astype(np.float64)
    eyes = (left_eye + right_eye) / 2
    mouth = (mouth_left + mouth_right) / 2
    axis = right_eye - left_eye
    eye_distance = max(float(np.linalg.norm(axis)), 1e-6)
    unit = axis / eye_distance
    normal = np.array([-unit[1], unit[0]])
    yaw = float(np.dot(nose - eyes, unit)) / eye_distance
    span = max(float(np.dot(mouth - eyes, normal)), 1e-6)
    # On a frontal face the nose tip sits a little over half-way from the eye line to the mouth line.
    pitch = float(np.dot(nose - eyes, normal)) / span - 0.55
    return yaw, pitch


def assess(image: np.ndarray, faces: list[Face], limits: QualityLimits | None = None) -> QualityReport:
    """Check the first face of ``faces`` (the detectors sort the most prominent first)."""
    limits = limits or QualityLimits()
    report = QualityReport(faces_found=len(faces))
    if not faces:
        report.reasons.append(NO_FACE)
        return report
    if len(faces) > 1:
        report.reasons.append(MULTIPLE_FACES)
    face = faces[0]
    grey = cv2.cvtColor(align(image, face.landmarks, 112), cv2.COLOR_BGR2GRAY)
    centre = grey[24:104, 24:88]  # cheeks, eyes, nose, mouth: little hair or background
    yaw, pitch = pose_ratios(face)
    report.metrics = {
        "eye_distance": face.eye_distance,
        "sharpness": float(cv2.Laplacian(centre, cv2.CV_64F).var()),
        "brightness": float(centre.mean()),
        "yaw": yaw,
        "pitch": pitch,
        "detector_score": face.score,
    }
    m = report.metrics
    if m["eye_distance"] < limits.min_eye_distance:
        report.reasons.append(FACE_TOO_SMALL)
    if m["sharpness"] < limits.min_sharpness:
        report.reasons.append(TOO_BLURRY)
    if m["brightness"] < limits.min_brightness:
        report.reasons.append(TOO_DARK)
    elif m["brightness"] > limits.max_brightness:
        report.reasons.append(TOO_BRIGHT)
    if abs(yaw) > limits.max_yaw or abs(pitch) > limits.max_pitch:
        report.reasons.append(POSE_NOT_FRONTAL)
    return report
