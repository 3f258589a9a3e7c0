"""Score a recorded challenge video: decode -> gaze features (+ anti-spoofing samples) -> verdicts.

One call, ``score_video``, for the inference daemon's ``liveness`` RPC and for ``facematch liveness score``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import LivenessSettings
from edge.liveness.challenge import Challenge
from edge.liveness.presentation import PresentationEvidence, PresentationParams, judge
from edge.liveness.validator import ValidatorParams, validate
from edge.vision.engine import FaceEngine
from edge.vision.gaze import GazeFrame, GazeTracker
from edge.vision.moire import face_spectrum
from edge.vision.motion import MotionSample
from edge.vision.video import Frame, read_frames

# Landmarks run in two lanes, one per core, each with its own FaceLandmarker taking every other frame (the landmarker
# itself uses one core); the caller's thread decodes ahead of them.
LANES = 2
MAX_IN_FLIGHT = 8
# Frames after the last window are not needed; a little more than the challenge is read.
RECORDING_TAIL = 0.5
# Frames are tracked at most every FRAME_INTERVAL seconds: 10 a second still give each window ~24 counted frames,
# and a 9 s challenge scores in under a second on 2 cores (the accuracy cost is measured by `facematch bench gaze`).
FRAME_INTERVAL = 0.1
# Anti-spoofing looks at one frame every ANTISPOOF_INTERVAL seconds (~10 ms each: the models and the moiré window); the
# landmarks and the grey frame for the motion cues are kept every MOTION_INTERVAL seconds.
ANTISPOOF_INTERVAL = 1.0
MOTION_INTERVAL = 0.5


@dataclass
class FrameResult:
    features: GazeFrame
    points: np.ndarray | None = None
    motion: MotionSample | None = None
    live: float | None = None
    spectrum: np.ndarray | None = None


@dataclass
class Tracked:
    frames: list[GazeFrame] = field(default_factory=list)
    presentation: PresentationEvidence = field(default_factory=PresentationEvidence)
    seconds: float = 0.0

    def add(self, result: FrameResult) -> None:
        """Append one frame's results, in the video's order."""
        evidence = self.presentation
        self.frames.append(result.features)
        if result.features.face:
            evidence.blink_scores.append(result.features.blink)
        if result.points is not None:
            evidence.point_sets.append(result.points)
        if result.motion is not None:
            evidence.motion_samples.append(result.motion)
        if result.live is not None:
            evidence.live_probabilities.append(result.live)
        if result.spectrum is not None:
            evidence.screen_spectra.append(result.spectrum)


def track_frame(
    tracker: GazeTracker, frame: Frame, engine: FaceEngine | None, want_pad: bool, want_points: bool
) -> FrameResult:
    result = FrameResult(tracker.track(frame.rgb, frame.t))
    if want_points and tracker.last_points is not None:
        result.points = tracker.last_points
        low, high = result.points.min(axis=0), result.points.max(axis=0)
        box = (float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1]))
        result.motion = MotionSample(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY), box)
    if want_pad and engine is not None:
        bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
        faces = engine.detector.detect(bgr)
        if faces:
            result.live = engine.pad.score(bgr, faces[0]).live_probability
            result.spectrum = face_spectrum(bgr, faces[0].box)
    return result


def track_video(
    path: Path,
    landmarker: Path,
    max_seconds: float,
    interval: float = FRAME_INTERVAL,
    engine: FaceEngine | None = None,
) -> Tracked:
    """Gaze features of the frames up to ``max_seconds``; with ``engine``, anti-spoofing samples too."""
    started = time.perf_counter()
    tracked = Tracked()
    next_pad, next_motion = 0.0, 0.0
    trackers = [GazeTracker(landmarker) for _ in range(LANES)]
    lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"landmarks-{i}") for i in range(LANES)]
    in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    futures: list[Future[FrameResult]] = []
    try:
        for index, frame in enumerate(read_frames(path, max_seconds=max_seconds, interval=interval)):
            # Both only feed the anti-spoofing verdict, which needs the engine.
            want_pad = engine is not None and frame.t >= next_pad
            want_points = engine is not None and frame.t >= next_motion
            if want_pad:
                next_pad = frame.t + ANTISPOOF_INTERVAL
            if want_points:
                next_motion = frame.t + MOTION_INTERVAL
            in_flight.acquire()
            lane = index % LANES
            future = lanes[lane].submit(track_frame, trackers[lane], frame, engine, want_pad, want_points)
            future.add_done_callback(lambda _: in_flight.release())
            futures.append(future)
        for future in futures:
            tracked.add(future.result())
    finally:
        for lane in lanes:
            lane.shutdown(wait=True, cancel_futures=True)
        for tracker in trackers:
            tracker.close()
    tracked.seconds = time.perf_counter() - started
    return tracked


def scoring_params(liveness: LivenessSettings) -> tuple[ValidatorParams, PresentationParams]:
    """The validator's and the anti-spoofing verdict's settings, as configured."""
    return (
        ValidatorParams(accuracy_threshold=liveness.accuracy_threshold),
        PresentationParams(
            texture_threshold=liveness.video_antispoof_threshold,
            screen_pattern_threshold=liveness.screen_pattern_threshold,
        ),
    )


def score_video(
    path: Path,
    sequence: list[int],
    area_duration: float,
    landmarker: Path,
    params: ValidatorParams | None = None,
    engine: FaceEngine | None = None,
    presentation_params: PresentationParams | None = None,
) -> dict[str, Any]:
    """The result object of /submit-liveness for a video whose first frame is the start of the first window.

    It passes only when the gaze follows the sequence and, with ``engine``, the anti-spoofing cues find a live face.
    """
    challenge = Challenge(tuple(sequence), area_duration)
    tracked = track_video(path, landmarker, challenge.total_duration + RECORDING_TAIL, engine=engine)
    verdict = validate(tracked.frames, challenge, params)
    result = verdict.to_dict()
    if engine is not None:
        presentation = judge(tracked.presentation, presentation_params)
        result["anti_spoofing"] = presentation.to_dict()
        result["reasons"] += result["anti_spoofing"]["reasons"]
        if not presentation.passed:
            result["result"] = "fail"
    else:
        result["anti_spoofing"] = {"checked": False, "reason": "scored without the anti-spoofing models"}
    result["frames_processed"] = len(tracked.frames)
    result["video_seconds"] = round(tracked.frames[-1].t, 3) if tracked.frames else 0.0
    result["tracking_time"] = round(tracked.seconds, 3)
    return result
