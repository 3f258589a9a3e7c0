"""RPC handlers of the inference daemon: each takes the method's request model and returns its result model."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge import __version__
from edge.bus import Bus, RpcMethod
from edge.bus.messages import (
    HealthRequest,
    HealthResult,
    LivenessRequest,
    LivenessResult,
    MatchRequest,
    MatchResult,
)
from edge.config import Settings
from edge.errors import ErrorCode, InputError
from edge.inference.gallery import GalleryService
from edge.inference.images import decode_field, refusal
from edge.inference.liveness import gaze_nets, score_video, scoring_params
from edge.liveness.challenge import SequenceError, check_issued
from edge.vision.decode import return_large_buffers_to_the_system
from edge.vision.engine import FaceAnalysis, FaceEngine
from edge.vision.quality import MESSAGES, MULTIPLE_FACES
from edge.vision.video import VideoError
from models import model_path

IMAGE_FIELDS = ("image1", "image2")
# Requests are worked on two at a time (2 cores; a video's landmarks use both lanes anyway).
REQUEST_LANES = 2
# A streamed challenge video that makes no progress for this long was cut off (the page sends a chunk every 0.5 s).
STREAM_IDLE_SECONDS = 5.0


class InferenceService:
    def __init__(self, settings: Settings, engine: FaceEngine):
        return_large_buffers_to_the_system()
        self.settings = settings
        self.engine = engine
        # The two images of one request are decoded, detected and embedded side by side (2 cores).
        self._images = ThreadPoolExecutor(2, thread_name_prefix="image")
        self.gaze_nets = gaze_nets(settings)
        self.loaded_at = time.time()

    def close(self) -> None:
        self._images.shutdown(wait=False, cancel_futures=True)

    def serve(self, bus: Bus, gallery: GalleryService | None = None) -> list[ThreadPoolExecutor]:
        """Answer every RPC on ``bus``; returns the executors to shut down. Health has a lane of its own, so it
        answers while both request lanes are busy scoring videos (it used to queue behind them: 503 under load).
        With ``gallery``, also the gallery's RPCs, and its index follows ``gallery/changed``."""
        requests = ThreadPoolExecutor(REQUEST_LANES, thread_name_prefix="rpc")
        health = ThreadPoolExecutor(1, thread_name_prefix="health")
        # A streamed challenge waits for its video most of the time: it has lanes of its own, so that it never holds
        # up /match (as many as the hub lets in at once).
        streams = ThreadPoolExecutor(self.settings.http.max_inflight_liveness, thread_name_prefix="stream")
        bus.serve(RpcMethod.MATCH, self.match, requests)
        bus.serve(RpcMethod.LIVENESS, self.liveness, requests)
        bus.serve(RpcMethod.LIVENESS_STREAM, self.liveness_stream, streams)
        bus.serve(RpcMethod.HEALTH, self.health, health)
        if gallery is not None:
            bus.serve(RpcMethod.IDENTIFY, gallery.identify, requests)
            bus.serve(RpcMethod.ENROLL, gallery.enroll, requests)
            bus.serve(RpcMethod.NEGATIVE, gallery.negative, requests)
            bus.serve(RpcMethod.REEMBED, gallery.reembed, requests)
            bus.subscribe(bus.topics.gallery_changed, gallery.on_gallery_changed, qos=1, latest_only=True)
        return [requests, health, streams]

    # -- health -----------------------------------------------------------------------------------------------

    def health(self, request: HealthRequest) -> HealthResult:
        return HealthResult(
            version=__version__,
            instance=self.settings.instance_id or self.settings.host_id,
            models={
                "detector": self.engine.detector.name,
                "embedding": self.engine.model_id,
                "eye_tracker": "mediapipe-face-landmarker" + ("+gazefollower-mgazenet" if self.gaze_nets else ""),
                "antispoofing": "minifasnet-v2+v1se",
            },
            runs_on=self.engine.runs_on(),
            calibration=self.engine.calibration.meta if self.engine.calibration else None,
            loaded_at=self.loaded_at,
        )

    # -- liveness ---------------------------------------------------------------------------------------------

    def liveness(self, request: LivenessRequest) -> LivenessResult:
        return self._score(request)

    def liveness_stream(self, request: LivenessRequest) -> LivenessResult:
        return self._score(request, stream_idle=STREAM_IDLE_SECONDS)

    def _score(self, request: LivenessRequest, stream_idle: float | None = None) -> LivenessResult:
        path = Path(request.video_path)
        if not path.is_file():
            raise InputError("the uploaded video is not in the spool directory", ErrorCode.VIDEO_MISSING)
        try:
            check_issued(request.sequence)
        except SequenceError as exc:
            raise InputError(str(exc), ErrorCode.BAD_REQUEST) from None
        if request.durations is not None and (len(request.durations) != len(request.sequence)
                                              or not all(0.5 <= d <= 20 for d in request.durations)):  # fmt: skip
            raise InputError("durations: one length (0.5..20 s) per cell", ErrorCode.BAD_REQUEST)
        params, presentation = scoring_params(self.settings.liveness)
        try:
            return score_video(
                path, request.sequence, request.area_duration,
                model_path(self.settings.models.dir, "face_landmarker"), params, self.engine, presentation,
                request.durations, stream_idle, self.gaze_nets, self.settings.liveness.gaze_net_interval,
            )  # fmt: skip
        except VideoError as exc:
            raise InputError(f"video: {exc}", ErrorCode(exc.code)) from None

    # -- match ------------------------------------------------------------------------------------------------

    def _analyze(self, field: str, encoded: str) -> FaceAnalysis:
        _, pixels = decode_field(field, encoded, self.settings.http.max_image_dimension)
        return self.engine.analyze(pixels, antispoof=True)

    def match(self, request: MatchRequest) -> MatchResult:
        started = time.perf_counter()
        images = {"image1": request.image1, "image2": request.image2}
        futures = {field: self._images.submit(self._analyze, field, images[field]) for field in IMAGE_FIELDS}
        analyses = {field: future.result() for field, future in futures.items()}
        for field, analysis in analyses.items():
            if not analysis.quality.ok:
                raise refusal(field, analysis)
        first, second = analyses["image1"].embedding, analyses["image2"].embedding
        assert first is not None and second is not None
        raw, score = self.engine.compare(first, second)
        warnings = [
            f"{field}: {MESSAGES[MULTIPLE_FACES]}"
            for field, analysis in analyses.items()
            if MULTIPLE_FACES in analysis.quality.reasons
        ]
        details = None
        if request.verbose:
            calibration = self.engine.calibration
            assert calibration is not None
            details = {
                "image1": analyses["image1"].to_dict(),
                "image2": analyses["image2"].to_dict(),
                "cosine_similarity": round(raw, 4),
                "cosine_threshold": round(calibration.cosine_for(request.threshold), 4),
                "false_match_rate_at_threshold": 10 ** (-5 * request.threshold),
                "detector": self.engine.detector.name,
            }
        return MatchResult(
            match=score >= request.threshold,
            liveness={field: a.liveness.is_live for field, a in analyses.items() if a.liveness},
            similarity_score=round(score, 4),
            threshold=request.threshold,
            model=self.engine.model_id,
            warnings=warnings,
            inference_time=round(time.perf_counter() - started, 4),
            details=details,
        )
