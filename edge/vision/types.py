"""The data passed between the vision steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Landmark order used everywhere in facematch (image coordinates, as the camera sees the face):
#   0 eye on the image's left, 1 eye on the image's right, 2 nose tip,
#   3 mouth corner on the image's left, 4 mouth corner on the image's right.
# This is the order of the ArcFace/SFace alignment template. Detectors convert to it.
LANDMARK_NAMES = ("eye_image_left", "eye_image_right", "nose", "mouth_image_left", "mouth_image_right")


@dataclass(frozen=True)
class Face:
    """One detected face: box (x, y, width, height) in pixels, 5 landmarks (5×2, order above), score in [0, 1]."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": {
                name: [round(float(x), 1), round(float(y), 1)]
                for name, (x, y) in zip(LANDMARK_NAMES, self.landmarks, strict=True)
            },
            "score": round(float(self.score), 4),
        }
