"""Score a recorded challenge video: decode -> gaze features -> validator. One call for the hub and the CLI."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edge.liveness.challenge import Challenge
from edge.liveness.validator import ValidatorParams, validate
from edge.vision.gaze import GazeFrame, GazeTracker
from edge.vision.video import Frame, read_frames

# Decoding runs one frame ahead of the landmarker, on the second core.
_DECODER = ThreadPoolExecutor(1, thread_name_prefix="decode")
# Frames after the last window are not needed; a little more than the challenge is read.
RECORDING_TAIL = 0.5
# Every FRAME_STRIDE-th frame is tracked: at 30 fps, 10 frames a second still give each window ~24 counted frames
# (the accuracy cost is measured by `facematch bench gaze --stride`).
FRAME_STRIDE = 3


def track_video(
    path: Path, landmarker: Path, max_seconds: float, stride: int = FRAME_STRIDE
) -> tuple[list[GazeFrame], float]:
    """Gaze features of every frame up to ``max_seconds``; returns (frames, seconds spent decoding + tracking)."""
    started = time.perf_counter()
    frames: list[GazeFrame] = []
    source = read_frames(path, max_seconds=max_seconds, stride=stride)

    def next_frame() -> Frame | None:
        return next(source, None)

    with GazeTracker(landmarker) as tracker:
        pending = _DECODER.submit(next_frame)
        while (frame := pending.result()) is not None:
            pending = _DECODER.submit(next_frame)
            frames.append(tracker.track(frame.rgb, frame.t))
    return frames, time.perf_counter() - started


def score_video(
    path: Path,
    sequence: list[int],
    area_duration: float,
    landmarker: Path,
    params: ValidatorParams | None = None,
) -> dict[str, Any]:
    """The result object of /submit-liveness for a video whose first frame is the start of the first window."""
    challenge = Challenge(tuple(sequence), area_duration)
    frames, seconds = track_video(path, landmarker, challenge.total_duration + RECORDING_TAIL)
    verdict = validate(frames, challenge, params)
    result = verdict.to_dict()
    result["frames_processed"] = len(frames)
    result["video_seconds"] = round(frames[-1].t, 3) if frames else 0.0
    result["tracking_time"] = round(seconds, 3)
    return result
