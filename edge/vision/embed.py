"""Face embeddings with ONNX Runtime. Every embedding carries its model id: models are never compared."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.vision.align import align
from edge.vision.onnx import create_session
from edge.vision.types import Face


@dataclass(frozen=True)
class Embedding:
    model_id: str
    vector: np.ndarray  # L2-normalised float32


class EmbeddingMismatch(ValueError):
    """Two embeddings from different models were compared."""


def cosine(a: Embedding, b: Embedding) -> float:
    if a.model_id != b.model_id:
        raise EmbeddingMismatch(f"cannot compare a {a.model_id} embedding with a {b.model_id} embedding")
    return float(np.dot(a.vector, b.vector))


class SFaceEmbedder:
    """SFace (OpenCV Zoo, int8 block-quantised): 112×112 ArcFace-aligned RGB 0..255 -> 128-d."""

    model_id = "sface-2021dec-int8bq"
    input_size = 112

    def __init__(self, model: Path, providers: list[str]):
        self._session = create_session(model, providers)
        inputs = self._session.get_inputs()
        self._input = inputs[0].name
        # The file lists its unused initialisers as graph inputs; ONNX Runtime insists they be fed.
        self._extra = {
            i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype=np.float32) for i in inputs[1:]
        }

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        crop = align(image, face.landmarks, self.input_size)
        blob = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)[None]
        vector = self._session.run(None, {self._input: blob, **self._extra})[0][0].astype(np.float32)
        return Embedding(self.model_id, vector / max(float(np.linalg.norm(vector)), 1e-12))
