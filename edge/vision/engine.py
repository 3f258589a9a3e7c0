"""The face engine: detect -> quality -> align -> embed -> calibrated compare. Models are loaded once."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.config import Settings
from edge.vision.antispoof import MiniFasNetEnsemble, PadResult
from edge.vision.calibration import Calibration
from edge.vision.detect import Detector, MtcnnDetector, YuNetDetector
from edge.vision.embed import (
    DlibEmbedder,
    Embedding,
    FaceNetEmbedder,
    FusedEmbedder,
    MobileFaceNetEmbedder,
    SFaceEmbedder,
    cosine,
)
from edge.vision.fusion import Fusion
from edge.vision.onnx import Provider, configured_providers
from edge.vision.quality import QualityLimits, QualityReport, assess
from edge.vision.types import Face
from models import load_manifest, model_path

log = logging.getLogger(__name__)


@dataclass
class FaceAnalysis:
    face: Face | None
    quality: QualityReport
    embedding: Embedding | None
    liveness: PadResult | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "face": self.face.to_dict() if self.face else None,
            "quality": self.quality.to_dict(),
            "liveness": self.liveness.to_dict() if self.liveness else None,
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }


Embedder = SFaceEmbedder | FaceNetEmbedder | MobileFaceNetEmbedder | DlibEmbedder | FusedEmbedder


def make_detector(name: str, models_dir: Path) -> Detector:
    if name == "mtcnn":
        return MtcnnDetector()
    return YuNetDetector(model_path(models_dir, "yunet"))


def warn_of_licences(embedders: list[str]) -> None:
    """Say in the log, whenever they are loaded, which embedders' weights are not for every use (the operator chose
    them in config; the log is where a deployment's reviewer will look)."""
    manifest = load_manifest().models
    for name in embedders:
        spec = manifest.get(name)  # dlib's files have other names; CC0
        if spec is not None and spec.restricted_use:
            log.warning("embedder %s: %s", name, spec.license)


def make_embedder(settings: Settings, providers: list[Provider]) -> Embedder:
    """The configured profile's embedder: ``accurate`` fuses ``matching.accurate_embedders``; ``fast`` is
    ``matching.embedder``."""
    models_dir, flip = settings.models.dir, settings.matching.flip_embedding
    kinds = {"sface": SFaceEmbedder, "facenet": FaceNetEmbedder, "mbf": MobileFaceNetEmbedder}
    if settings.matching.profile == "accurate":
        names = settings.matching.accurate_embedders
        warn_of_licences(names)
        parts = [kinds[name](model_path(models_dir, name), providers, flip=True) for name in names]
        return FusedEmbedder(parts, Fusion.load(tuple(p.model_id for p in parts)))
    warn_of_licences([settings.matching.embedder])
    if settings.matching.embedder == "dlib":
        return DlibEmbedder(model_path(models_dir, "dlib_resnet"), model_path(models_dir, "dlib_shape5"))
    name = settings.matching.embedder
    return kinds[name](model_path(models_dir, name), providers, flip=flip)


class FaceEngine:
    def __init__(
        self,
        settings: Settings,
        detector: str | None = None,
        limits: QualityLimits | None = None,
        *,
        calibrated: bool = True,
    ):
        models_dir = settings.models.dir
        providers = configured_providers(
            settings.models.onnx_providers, settings.models.tensorrt_cache_dir or settings.paths.state_dir / "tensorrt"
        )
        self.detector = make_detector(detector or settings.matching.detector, models_dir)
        self.embedder = make_embedder(settings, providers)
        self.pad = MiniFasNetEnsemble(
            models_dir, providers, settings.liveness.antispoof_threshold,
            settings.liveness.antispoof_rule,
        )  # fmt: skip
        # Only `facematch calibrate` runs uncalibrated: it is what writes the calibration.
        self.calibration = Calibration.load(self.embedder.model_id) if calibrated else None
        self.limits = limits or QualityLimits()

    def runs_on(self) -> dict[str, str]:
        """Which runtime and provider each model really runs on (ONNX Runtime may have fallen back to the CPU)."""
        return {
            "detector": self.detector.runs_on,
            "embedding": self.embedder.runs_on,
            "antispoofing": self.pad.runs_on,
            "eye_tracker": "MediaPipe (CPU, XNNPACK)",
        }

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def embedder_dimension(self) -> int:
        return self.embedder.dimension

    def analyze(self, image: np.ndarray, *, embed_if_poor: bool = False, antispoof: bool = False) -> FaceAnalysis:
        """Detect, assess and (when the quality allows, or ``embed_if_poor``) embed the most prominent face;
        with ``antispoof``, also run the passive anti-spoofing models on it."""
        started = time.perf_counter()
        faces = self.detector.detect(image)
        detected = time.perf_counter()
        report = assess(image, faces, self.limits)
        timings = {"detect": (detected - started) * 1000}
        embedding = None
        if faces and (report.ok or embed_if_poor):
            embedding = self.embedder.embed(image, faces[0])
            timings["embed"] = (time.perf_counter() - detected) * 1000
        liveness = None
        if faces and antispoof:
            pad_started = time.perf_counter()
            liveness = self.pad.score(image, faces[0])
            timings["antispoof"] = (time.perf_counter() - pad_started) * 1000
        return FaceAnalysis(faces[0] if faces else None, report, embedding, liveness, timings)

    def compare(self, a: Embedding, b: Embedding) -> tuple[float, float]:
        """(raw cosine, calibrated similarity score in [0, 1])."""
        if self.calibration is None:
            raise RuntimeError("this engine was built without a calibration")
        raw = cosine(a, b)
        return raw, self.calibration.score(raw)
