"""The ``accurate`` profile's template: several embedders' vectors fused into one, compared by one cosine.

Score fusion by z-scored cosines, ``Σ (cos_i − μ_i) / σ_i`` with each embedder's impostor mean and spread, equals (up
to an affine map, which the calibration absorbs) the cosine of the concatenated vectors each weighted by
``1 / √σ_i``: ``cos([w₁a₁, w₂a₂], [w₁b₁, w₂b₂]) = Σ wᵢ² cos(aᵢ, bᵢ) / Σ wᵢ²`` for unit ``aᵢ, bᵢ``. So the fused
template is one unit vector, and everything built for one embedder (calibration, the 1:N matrix, the gallery's
per-model storage) works on it unchanged. μ and σ are fitted on LFW View 1 and the impostor sample only
(``facematch calibrate --profile accurate``), never on View 2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import write_atomic
from edge.vision.calibration import CALIBRATION_DIR


class FusionMissing(Exception):
    """No fitted fusion for these embedders: ``facematch calibrate --profile accurate`` writes it."""


@dataclass(frozen=True)
class Fusion:
    parts: tuple[str, ...]
    impostor_mean: tuple[float, ...]
    impostor_std: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def weights(self) -> np.ndarray:
        return 1.0 / np.sqrt(np.asarray(self.impostor_std, dtype=np.float64))

    @property
    def model_id(self) -> str:
        """Names the parts and the fitted weights: re-fitted weights make other templates, so another id."""
        digest = hashlib.sha256(json.dumps([self.parts, [round(s, 6) for s in self.impostor_std]]).encode())
        return "fused-" + "+".join(p.split("-")[0] for p in self.parts) + "-" + digest.hexdigest()[:6]

    def fuse(self, vectors: list[np.ndarray]) -> np.ndarray:
        """One unit template from each part's unit vector (a row each, or a matrix of rows each)."""
        weighted = [w * np.asarray(v, dtype=np.float32) for w, v in zip(self.weights, vectors, strict=True)]
        joined = np.concatenate(weighted, axis=-1)
        norm = np.linalg.norm(joined, axis=-1, keepdims=True)
        return (joined / np.maximum(norm, 1e-12)).astype(np.float32)

    @classmethod
    def fit(cls, parts: tuple[str, ...], impostor_cosines: list[np.ndarray], meta: dict[str, Any]) -> Fusion:
        return cls(parts, tuple(float(np.mean(c)) for c in impostor_cosines),
                   tuple(float(np.std(c)) for c in impostor_cosines), meta)  # fmt: skip

    @staticmethod
    def path_for(parts: tuple[str, ...], folder: Path = CALIBRATION_DIR) -> Path:
        return folder / f"fusion-{'+'.join(parts)}.json"

    def save(self, folder: Path = CALIBRATION_DIR) -> Path:
        document = {"parts": list(self.parts), "impostor_mean": list(self.impostor_mean),
                    "impostor_std": list(self.impostor_std), "model_id": self.model_id, "meta": self.meta}  # fmt: skip
        return write_atomic(self.path_for(self.parts, folder), json.dumps(document, indent=1) + "\n")

    @classmethod
    def load(cls, parts: tuple[str, ...], folder: Path = CALIBRATION_DIR) -> Fusion:
        path = cls.path_for(parts, folder)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise FusionMissing(f"no fusion fitted for {' + '.join(parts)} ({path}): run facematch calibrate "
                                "--profile accurate --lfw-dir …") from None  # fmt: skip
        return cls(tuple(document["parts"]), tuple(document["impostor_mean"]), tuple(document["impostor_std"]),
                   document.get("meta", {}))  # fmt: skip
