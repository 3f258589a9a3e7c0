"""Score a recorded challenge video: decode -> gaze features (+ anti-spoofing samples) -> verdicts.

One call, ``score_video``, for the inference daemon's ``liveness`` RPC and for ``facematch liveness score``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.bus.messages import AntiSpoofing, AreaResult, LivenessResult, Reason
from edge.config import LivenessSettings, Settings
from edge.errors import ErrorCode, FacematchError
from edge.liveness import presentation as pad
from edge.liveness import validator
from edge.liveness.challenge import Challenge
from edge.liveness.presentation import PresentationEvidence, PresentationParams, PresentationVerdict, judge
from edge.liveness.validator import LivenessVerdict, ValidatorParams, validate
from edge.vision.engine import FaceEngine
from edge.vision.gaze import GazeFrame, GazeTracker
from edge.vision.gaze_net import GazeNetPool, GazeNetUnavailable
from edge.vision.moire import face_spectrum
from edge.vision.motion import MotionPairs, MotionSample
from edge.vision.stream import growing_file
from edge.vision.video import Frame, VideoError, read_frames

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
    tracker: GazeTracker, frame: Frame, engine: FaceEngine | None, want_pad: bool, want_points: bool,
    want_net: bool = False,
) -> FrameResult:  # fmt: skip
    result = FrameResult(tracker.track(frame.rgb, frame.t, with_net=want_net))
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
    nets: GazeNetPool | None = None,
    net_interval: float = 0.0,
) -> Tracked:
    """Gaze features of the frames up to ``max_seconds``; with ``engine``, anti-spoofing samples too; with ``nets``,
    the gaze network's reading on frames at least ``net_interval`` seconds apart."""
    started = time.perf_counter()
    tracked = Tracked()
    with contextlib.ExitStack() as borrowed:
        lent = [borrowed.enter_context(nets.lend()) if nets else None for _ in range(LANES)]
        trackers = [GazeTracker(landmarker, net) for net in lent]
        _track_frames(path, max_seconds, interval, engine, trackers, tracked, net_interval if nets else None)
    tracked.seconds = time.perf_counter() - started
    return tracked


def _track_frames(
    path: Path, max_seconds: float, interval: float, engine: FaceEngine | None, trackers: list[GazeTracker],
    tracked: Tracked, net_interval: float | None,
) -> None:  # fmt: skip
    next_pad, next_motion, last_net = 0.0, 0.0, -math.inf
    lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"landmarks-{i}") for i in range(LANES)]
    in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    futures: list[Future[FrameResult]] = []
    pairs = MotionPairs()  # the picture-motion cue, pair by pair while the frames come (a stream's end waits less)
    try:
        for index, frame in enumerate(read_frames(path, max_seconds=max_seconds, interval=interval)):
            # Both only feed the anti-spoofing verdict, which needs the engine.
            want_pad = engine is not None and frame.t >= next_pad
            want_points = engine is not None and frame.t >= next_motion
            if want_pad:
                next_pad = frame.t + ANTISPOOF_INTERVAL
            if want_points:
                next_motion = frame.t + MOTION_INTERVAL
            # The same spacing as `bench gaze` gives the network's readings (0.9: jitter in the timestamps).
            want_net = net_interval is not None and frame.t - last_net >= 0.9 * net_interval
            if want_net:
                last_net = frame.t
            in_flight.acquire()
            lane = index % LANES
            future = lanes[lane].submit(track_frame, trackers[lane], frame, engine, want_pad, want_points, want_net)
            future.add_done_callback(lambda _: in_flight.release())
            futures.append(future)
            if want_points:
                pairs.add(lambda done=future: done.result().motion)
        for future in futures:
            tracked.add(future.result())
        tracked.presentation.picture_motion = pairs.result()
    finally:
        pairs.close()
        for lane in lanes:
            lane.shutdown(wait=True, cancel_futures=True)
        for tracker in trackers:
            tracker.close()


def gaze_nets(settings: Settings) -> GazeNetPool | None:
    """The gaze network when configured (``liveness.gaze_net``), loaded now: a missing runtime or weights file stops
    the daemon at start with the fix, rather than failing each challenge."""
    if not settings.liveness.gaze_net:
        return None
    from models import ModelMissing, model_path

    try:
        return GazeNetPool(model_path(settings.models.dir, "gaze_net"))
    except GazeNetUnavailable as exc:
        raise ModelMissing(f"liveness.gaze_net is on, but {exc}") from None


def scoring_params(liveness: LivenessSettings) -> tuple[ValidatorParams, PresentationParams]:
    """The validator's and the anti-spoofing verdict's settings, as configured."""
    return (
        ValidatorParams(
            accuracy_threshold=liveness.accuracy_threshold, row_source="both" if liveness.gaze_net else "iris"
        ),
        PresentationParams(
            texture_threshold=liveness.video_antispoof_threshold,
            screen_pattern_threshold=liveness.screen_pattern_threshold,
        ),
    )


def _reasons(codes: list[str], messages: dict[str, tuple[str, str]]) -> list[Reason]:
    return [Reason(code=code, message=messages[code][0], hint=messages[code][1]) for code in codes]


def anti_spoofing_of(verdict: PresentationVerdict) -> AntiSpoofing:
    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    return AntiSpoofing(
        checked=True,
        passed=verdict.passed,
        live_probability=rounded(verdict.live_probability, 4),
        frames_scored=verdict.frames_scored,
        screen_pattern=rounded(verdict.screen_pattern, 3),
        picture_motion=rounded(verdict.picture_motion, 3),
        planar_motion_ratio=rounded(verdict.planar_ratio, 4),
        blinks=verdict.blinks,
        reasons=_reasons(verdict.reasons, pad.MESSAGES),
    )


def liveness_result(gaze: LivenessVerdict, spoofing: PresentationVerdict | None, tracked: Tracked) -> LivenessResult:
    """The one place a liveness result is assembled: it passes only when the gaze followed and, when the
    anti-spoofing models were run, they found a live face."""
    reasons = _reasons(gaze.reasons, validator.MESSAGES)
    if spoofing is not None:
        anti_spoofing = anti_spoofing_of(spoofing)
        reasons += anti_spoofing.reasons
    else:
        anti_spoofing = AntiSpoofing(checked=False, reason="scored without the anti-spoofing models")
    passed = gaze.passed and (spoofing is None or spoofing.passed)
    # Anti-spoofing evidence against the video is never softened into "try again".
    try_again = gaze.try_again and (spoofing is None or spoofing.passed)
    return LivenessResult(
        result="pass" if passed else "fail",
        outcome="pass" if passed else "try_again" if try_again else "fail",
        overall_accuracy=round(gaze.overall_accuracy, 4),
        sequence_results=[
            AreaResult(
                index=a.index,
                area=a.cell,
                frames=a.frames,
                frames_used=a.frames_used,
                accuracy=round(a.accuracy, 4),
                passed=a.passed,
            )
            for a in gaze.areas
        ],
        reasons=reasons,
        anti_spoofing=anti_spoofing,
        frames_processed=len(tracked.frames),
        video_seconds=round(tracked.frames[-1].t, 3) if tracked.frames else 0.0,
        tracking_time=round(tracked.seconds, 3),
        diagnostics={k: round(v, 5) for k, v in gaze.diagnostics.items()},
    )


# A recording may end this much before the last window does (MediaRecorder stops a few frames early).
SHORT_SLACK = 0.5
# Shares of tracked frames beyond which a video is not a challenge attempt at all: it is refused as input (422, the
# session stays usable) instead of being scored as a failed challenge.
NO_FACE_SHARE = 0.8
TWO_FACES_SHARE = 0.5
# A camera recording is continuous: webcams record 15-30 frames a second (10 a second are tracked), without pauses.
# Crude edits of the timestamps (a jump to move a segment into a window, a clip stretched to fill the challenge)
# show as a gap or as too few frames; genuine recordings here have 0.033 s between frames. A re-timing that keeps a
# plausible frame rate is not caught by this (docs/SECURITY.md).
MAX_FRAME_GAP = 1.0
MIN_TRACKED_RATE = 5.0


def check_usable(tracked: Tracked, challenge: Challenge) -> None:
    """Raise VideoError (400) or FacematchError (422) when the video cannot be a try at this challenge."""
    seconds = tracked.frames[-1].t if tracked.frames else 0.0
    if seconds < challenge.total_duration - SHORT_SLACK:
        raise VideoError(
            "video_too_short", f"the video lasts {seconds:.1f} s but the challenge takes {challenge.total_duration:g} s"
        )
    gaps = np.diff([f.t for f in tracked.frames])
    if len(gaps) and gaps.max() > MAX_FRAME_GAP:
        raise VideoError("video_timing", f"the video pauses for {gaps.max():.1f} s: record the challenge in one go")
    if len(tracked.frames) / max(seconds, 1e-6) < MIN_TRACKED_RATE:
        raise VideoError("video_timing", "the video has too few frames a second to be a camera recording")
    if np.mean([f.faces == 0 for f in tracked.frames]) > NO_FACE_SHARE:
        raise FacematchError("no face was found in the video: keep your face in view of the camera", ErrorCode.NO_FACE)
    if np.mean([f.faces > 1 for f in tracked.frames]) > TWO_FACES_SHARE:
        raise FacematchError(
            "more than one face was in view: make sure only you are in front of the camera", ErrorCode.MULTIPLE_FACES
        )


def score_video(
    path: Path,
    sequence: list[int],
    area_duration: float,
    landmarker: Path,
    params: ValidatorParams,
    engine: FaceEngine | None = None,
    presentation_params: PresentationParams | None = None,
    durations: list[float] | None = None,
    stream_idle: float | None = None,
    nets: GazeNetPool | None = None,
    net_interval: float = 0.0,
) -> LivenessResult:
    """The result of /submit-liveness for a video whose first frame is the start of the first window.

    It passes only when the gaze follows the sequence and, with ``engine``, the anti-spoofing cues find a live face.
    With ``stream_idle``, ``path`` is still being uploaded (:mod:`edge.vision.stream`): frames are scored as they
    arrive, and an upload that makes no progress for that many seconds is refused as stalled.
    """
    challenge = Challenge(tuple(sequence), area_duration, tuple(durations) if durations else None)
    seconds = challenge.total_duration + RECORDING_TAIL
    if stream_idle is None:
        tracked = track_video(path, landmarker, seconds, engine=engine, nets=nets, net_interval=net_interval)
    else:
        with growing_file(path, stream_idle) as (pipe, feed):
            try:
                tracked = track_video(pipe, landmarker, seconds, engine=engine, nets=nets, net_interval=net_interval)
            except VideoError:
                if not feed.stalled:
                    raise
            if feed.stalled:
                raise VideoError(
                    "stream_stalled", f"no part of the video arrived for {stream_idle:g} s: the recording was cut off"
                )
    check_usable(tracked, challenge)
    gaze = validate(tracked.frames, challenge, params)
    spoofing = judge(tracked.presentation, presentation_params) if engine is not None else None
    return liveness_result(gaze, spoofing, tracked)
