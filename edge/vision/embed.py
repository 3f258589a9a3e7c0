"""Face embeddings with ONNX Runtime. Every embedding carries its model id: models are never compared."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.vision.align import align
from edge.vision.fusion import Fusion
from edge.vision.model_id import DIMENSIONS, MODEL_IDS, model_id_for
from edge.vision.onnx import Provider, create_session, running_on
from edge.vision.types import Face
from models.derive import dequantize, keras_to_onnx


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
    """SFace (OpenCV Zoo): 112×112 ArcFace-aligned RGB 0..255 -> 128-d.

    Runs the float32 copy of the int8 block-quantised file (``models.derive``). With ``flip``, the embedding is the
    sum of the face's and its mirror image's (one batch of 2): +0.2 % on LFW View 1 for ~2× the model time.
    """

    kind = "sface"
    input_size = 112
    dimension = DIMENSIONS["sface"]

    def __init__(self, model: Path, providers: list[Provider], flip: bool = True):
        self.flip = flip
        self.model_id = model_id_for(self.kind, flip)
        self._session = create_session(self._onnx_file(model), providers)
        self._input = self._session.get_inputs()[0].name
        self.runs_on = f"ONNX Runtime ({running_on(self._session)})"

    @staticmethod
    def _onnx_file(model: Path) -> Path:
        return dequantize(model)

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        crop = cv2.cvtColor(align(image, face.landmarks, self.input_size), cv2.COLOR_BGR2RGB)
        crops = [crop, crop[:, ::-1]] if self.flip else [crop]
        vector = self._vectors(np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2)).sum(axis=0)
        return Embedding(self.model_id, (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32))

    def _vectors(self, blob: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: blob})[0]


class MobileFaceNetEmbedder(SFaceEmbedder):
    """InsightFace's MobileFaceNet trained on WebFace600K (``w600k_mbf``, buffalo_s): the same 112×112 ArcFace-aligned
    RGB crop as SFace, scaled to [-1, 1] -> 512-d. **Its weights are for non-commercial research only.**

    With ``flip``, the sum of the face's and its mirror image's unit vectors. The file declares a batch of one, so the
    two crops run one after the other (same cost; a batch of two works but ONNX Runtime warns on every call).
    """

    kind = "mbf"
    dimension = DIMENSIONS["mbf"]

    @staticmethod
    def _onnx_file(model: Path) -> Path:
        return model

    def _vectors(self, blob: np.ndarray) -> np.ndarray:
        scaled = (blob - 127.5) / 127.5
        vectors = np.concatenate([self._session.run(None, {self._input: one[None]})[0] for one in scaled])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class FaceNetEmbedder:
    """FaceNet (Inception-ResNet-v1, MS-Celeb-1M; keras-facenet converted to ONNX at fetch): 160×160 RGB aligned on
    the ArcFace template scaled to 160 px, standardised per image -> 128-d; with ``flip``, plus its mirror image."""

    input_size = 160
    dimension = DIMENSIONS["facenet"]

    def __init__(self, model: Path, providers: list[Provider], flip: bool = True):
        self.flip = flip
        self.model_id = model_id_for("facenet", flip)
        self._session = create_session(keras_to_onnx(model), providers)
        self._input = self._session.get_inputs()[0].name
        self.runs_on = f"ONNX Runtime ({running_on(self._session)})"

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        crop = cv2.cvtColor(align(image, face.landmarks, self.input_size), cv2.COLOR_BGR2RGB).astype(np.float32)
        batch = np.stack([crop, crop[:, ::-1]] if self.flip else [crop])
        mean = batch.mean(axis=(1, 2, 3), keepdims=True)
        std = np.maximum(batch.std(axis=(1, 2, 3), keepdims=True), 1 / np.sqrt(crop.size))
        vectors = self._session.run(None, {self._input: ((batch - mean) / std).astype(np.float32)})[0]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vector = vectors.sum(axis=0)
        return Embedding(self.model_id, (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32))


class DlibEmbedder:
    """dlib's ResNet (CC0; what the face_recognition library uses): its own 5-point shape predictor aligns a 150×150
    chip inside dlib, then a 128-d descriptor. Needs the ``dlib-bin`` wheel (``install.sh --bench``)."""

    model_id = MODEL_IDS["dlib"]
    dimension = DIMENSIONS["dlib"]
    runs_on = "dlib (CPU)"

    def __init__(self, resnet: Path, shape5: Path):
        try:
            import dlib
        except ImportError:
            raise ImportError(
                "the dlib embedder needs dlib: .venv/bin/pip install dlib-bin (or ./install.sh --bench)"
            ) from None
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(shape5))
        self._net = dlib.face_recognition_model_v1(str(resnet))
        self._lock = threading.Lock()  # dlib's objects are not safe to share between threads

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        rgb = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        x, y, w, h = face.box
        box = self._dlib.rectangle(int(x), int(y), int(x + w), int(y + h))
        with self._lock:
            shape = self._shape(rgb, box)
            vector = np.array(self._net.compute_face_descriptor(rgb, shape), dtype=np.float32)
        return Embedding(self.model_id, vector / max(float(np.linalg.norm(vector)), 1e-12))


class FusedEmbedder:
    """The ``accurate`` profile: each part embeds the same detected face (aligning it its own way), and the fusion
    joins their unit vectors into one template (``edge.vision.fusion``)."""

    def __init__(self, parts: list[SFaceEmbedder | FaceNetEmbedder | MobileFaceNetEmbedder], fusion: Fusion):
        ids = tuple(p.model_id for p in parts)
        if ids != fusion.parts:
            raise ValueError(f"the fusion was fitted for {fusion.parts}, not {ids}")
        self.parts = parts
        self.fusion = fusion
        self.model_id = fusion.model_id
        self.dimension = sum(p.dimension for p in parts)
        self.runs_on = " + ".join(p.runs_on for p in parts)

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        return Embedding(self.model_id, self.fusion.fuse([p.embed(image, face).vector for p in self.parts]))
