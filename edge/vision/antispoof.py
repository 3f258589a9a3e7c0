"""Passive anti-spoofing (presentation-attack detection) with the MiniFASNet ensemble in ONNX Runtime.

MiniFASNetV2 sees the face box enlarged 2.7× and MiniFASNetV1SE 4.0× around its centre: they judge the face together
with its surroundings (paper edges, screen bezels, moiré). Each crop is resized to 80×80, BGR, float 0..255, no
normalisation; each model gives 3 logits whose softmax class 1 is "real"; the two probabilities are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.vision.onnx import Provider, create_session, running_on
from edge.vision.types import Face
from models import model_path

CROP_CLAMPED = "crop_clamped"  # the model saw much less context than it was trained with (tight image)
FACE_AT_BORDER = "face_at_border"  # the face box itself touches the image border
# A model whose crop could only be enlarged to less than this share of its scale is said to be clamped.
MIN_CONTEXT = 0.6
MODELS = (("minifasnet_v2", 2.7), ("minifasnet_v1se", 4.0))
INPUT_SIZE = 80


@dataclass
class PadResult:
    live_probability: float
    is_live: bool
    threshold: float
    per_model: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "live_probability": round(self.live_probability, 4),
            "is_live": self.is_live,
            "threshold": self.threshold,
            "per_model": {k: round(v, 4) for k, v in self.per_model.items()},
            "reasons": self.reasons,
        }


def context_crop(image: np.ndarray, box: tuple[float, float, float, float], scale: float) -> tuple[np.ndarray, float]:
    """The box enlarged ``scale``× around its centre, shifted to stay inside the image, as an 80×80 crop.

    As in the models' own preprocessing, the scale shrinks when the image is too small for it: the second value is the
    scale actually used.
    """
    height, width = image.shape[:2]
    x, y, w, h = box
    w, h = max(w, 1.0), max(h, 1.0)
    fitted = min((height - 1) / h, (width - 1) / w, scale)
    new_w, new_h = w * fitted, h * fitted
    cx, cy = x + w / 2, y + h / 2
    left, top = max(0.0, cx - new_w / 2), max(0.0, cy - new_h / 2)
    left, top = min(left, width - 1 - new_w), min(top, height - 1 - new_h)
    crop = image[int(top) : int(top + new_h) + 1, int(left) : int(left + new_w) + 1]
    return cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE)), fitted


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


class MiniFasNetEnsemble:
    def __init__(self, models_dir: Path, providers: list[Provider], threshold: float, rule: str):
        # threshold and rule: liveness.antispoof_threshold and .antispoof_rule (their one default is in config)
        self.threshold = threshold
        self.rule = rule
        self._sessions = []
        for name, scale in MODELS:
            session = create_session(model_path(models_dir, name), providers)
            self._sessions.append((name, scale, session, session.get_inputs()[0].name))
        self.runs_on = f"ONNX Runtime ({running_on(self._sessions[0][2])})"

    def score(self, image: np.ndarray, face: Face) -> PadResult:
        """``image`` is BGR (as decoded); ``face.box`` is the detector's (x, y, w, h)."""
        per_model: dict[str, float] = {}
        reasons: list[str] = []
        height, width = image.shape[:2]
        x, y, w, h = face.box
        if x <= 0.02 * width or y <= 0.02 * height or x + w >= 0.98 * width or y + h >= 0.98 * height:
            reasons.append(FACE_AT_BORDER)
        for name, scale, session, input_name in self._sessions:
            crop, used = context_crop(image, face.box, scale)
            if used < MIN_CONTEXT * scale and CROP_CLAMPED not in reasons:
                reasons.append(CROP_CLAMPED)
            blob = crop.astype(np.float32).transpose(2, 0, 1)[None]
            per_model[name] = float(_softmax(session.run(None, {input_name: blob})[0][0])[1])
        values = list(per_model.values())
        # "min": both models must find the face live (measured: see `facematch bench pad`); "mean": their average.
        live = float(min(values) if self.rule == "min" else np.mean(values))
        return PadResult(live, live >= self.threshold, self.threshold, per_model, reasons)
