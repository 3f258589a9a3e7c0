"""RPC handlers of the inference daemon. Each takes the request's JSON and returns the result's JSON."""

from __future__ import annotations

import base64
import binascii
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edge import __version__
from edge.bus import RemoteError
from edge.config import Settings
from edge.inference.liveness import score_video, scoring_params
from edge.vision.decode import ImageError, decode_image
from edge.vision.engine import FaceAnalysis, FaceEngine
from edge.vision.quality import MESSAGES, MULTIPLE_FACES, NO_FACE
from edge.vision.video import VideoError
from models import model_path

IMAGE_FIELDS = ("image1", "image2")


class InferenceService:
    def __init__(self, settings: Settings, engine: FaceEngine):
        self.settings = settings
        self.engine = engine
        # The two images of one request are decoded, detected and embedded side by side (2 cores).
        self._images = ThreadPoolExecutor(2, thread_name_prefix="image")
        self.loaded_at = time.time()

    def close(self) -> None:
        self._images.shutdown(wait=False, cancel_futures=True)

    # -- health -----------------------------------------------------------------------------------------------

    def health(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": __version__,
            "models": {
                "detector": self.engine.detector.name,
                "embedding": self.engine.model_id,
                "eye_tracker": "mediapipe-face-landmarker",
                "antispoofing": "minifasnet-v2+v1se",
            },
            "calibration": self.engine.calibration.meta if self.engine.calibration else None,
            "loaded_at": self.loaded_at,
        }

    # -- liveness ---------------------------------------------------------------------------------------------

    def liveness(self, request: dict[str, Any]) -> dict[str, Any]:
        path = Path(str(request.get("video_path", "")))
        if not path.is_file():
            raise RemoteError(400, "video_missing", "the uploaded video is not in the spool directory")
        params, presentation = scoring_params(self.settings.liveness)
        try:
            return score_video(
                path, list(request["sequence"]), float(request["area_duration"]),
                model_path(self.settings.models.dir, "face_landmarker"), params, self.engine, presentation,
            )  # fmt: skip
        except VideoError as exc:
            raise RemoteError(400, exc.code, f"video: {exc}") from None

    # -- match ------------------------------------------------------------------------------------------------

    def _analyze(self, field: str, encoded: Any) -> FaceAnalysis:
        if not isinstance(encoded, str):
            raise RemoteError(400, "invalid_image", f"{field}: expected base64 image bytes", {"image": field})
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RemoteError(400, "invalid_base64", f"{field}: not valid base64", {"image": field}) from None
        try:
            pixels = decode_image(data, self.settings.http.max_image_dimension)
        except ImageError as exc:
            status = 413 if exc.code == "image_too_large" else 400
            raise RemoteError(status, exc.code, f"{field}: {exc}", {"image": field}) from None
        return self.engine.analyze(pixels, antispoof=True)

    def match(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        threshold = request.get("threshold", self.settings.matching.similarity_threshold)
        futures = {field: self._images.submit(self._analyze, field, request.get(field)) for field in IMAGE_FIELDS}
        analyses = {field: future.result() for field, future in futures.items()}
        for field, analysis in analyses.items():
            if not analysis.quality.ok:
                blocking = [r for r in analysis.quality.to_dict()["reasons"] if r["code"] != MULTIPLE_FACES]
                code = NO_FACE if analysis.face is None else "poor_quality"
                message = "; ".join(r["message"] for r in blocking)
                raise RemoteError(
                    422, code, f"{field}: {message}", {"image": field, "quality": analysis.quality.to_dict()}
                )
        first, second = analyses["image1"].embedding, analyses["image2"].embedding
        assert first is not None and second is not None
        raw, score = self.engine.compare(first, second)
        warnings = [
            f"{field}: {MESSAGES[MULTIPLE_FACES]}"
            for field, analysis in analyses.items()
            if MULTIPLE_FACES in analysis.quality.reasons
        ]
        result: dict[str, Any] = {
            "match": score >= threshold,
            "liveness": {field: a.liveness.is_live for field, a in analyses.items() if a.liveness},
            "similarity_score": round(score, 4),
            "threshold": threshold,
            "model": self.engine.model_id,
            "warnings": warnings,
            "inference_time": round(time.perf_counter() - started, 4),
        }
        if request.get("verbose"):
            calibration = self.engine.calibration
            assert calibration is not None
            result["details"] = {
                "image1": analyses["image1"].to_dict(),
                "image2": analyses["image2"].to_dict(),
                "cosine_similarity": round(raw, 4),
                "cosine_threshold": round(calibration.cosine_for(threshold), 4),
                "false_match_rate_at_threshold": 10 ** (-5 * threshold),
                "detector": self.engine.detector.name,
            }
        return result
