"""``facematch bench gaze``: simulated challenges from the EyeGaze recordings, through the API's validator.

How the challenges are made:
- Each recording's frames go through the same decoding and FaceLandmarker features as an upload. The target's screen
  position of frame i is row i of ``game_coordinates_<ts>.csv``; it is mapped to a cell of a 2×3 grid laid over
  the 2560×1340 game window (column = X in thirds, row = Y in halves).
- A *dwell* is a run of frames whose target stays in one cell. The eyes follow the target ~0.4 s late, so a window
  of ``area_duration`` seconds is cut from [run start + 0.4 s, run end + 0.4 s].
- A genuine challenge joins three such windows of the same person, for the cells of a designed sequence, re-timed to
  [0, d), [d, 2d), [2d, 3d). Only sequences whose cells that person's recordings cover are drawn.
- Attacks: *replay*: a genuine challenge made for another sequence, checked against this one; *random gaze*: 9 s of
  continuous recording (the target, and so the eyes, wander) checked against a random sequence; *photo*: one real
  frame, warped as a photo held still (sub-pixel jitter) or moved by hand (slow drift, tilt, scale), run through
  FaceLandmarker frame by frame.
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edge.liveness.challenge import SEQUENCES, Challenge, cell_at
from edge.liveness.validator import ValidatorParams, validate
from edge.vision.gaze import GazeFrame, GazeTracker
from edge.vision.video import read_frames

GAME_WIDTH, GAME_HEIGHT = 2560, 1340
PURSUIT_LAG = 0.4
PEOPLE = {
    "A": ("1738772966", "1738773281", "1738773752"),
    "B": ("1738774660", "1738774720"),
}


@dataclass
class Recording:
    person: str
    name: str
    frames: list[GazeFrame]
    cells: list[int]  # target cell of each frame


def load_recording(video: Path, landmarker: Path, cache_dir: Path) -> list[GazeFrame]:
    cache = cache_dir / f"{video.stem}-{video.stat().st_size}.json"
    if cache.exists():
        return [GazeFrame(**row) for row in json.loads(cache.read_text())]
    with GazeTracker(landmarker) as tracker:
        frames = [tracker.track(f.rgb, f.t) for f in read_frames(video, max_frames=100_000)]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([f.to_dict() for f in frames]))
    return frames


def load_recordings(data_dir: Path, landmarker: Path, cache_dir: Path) -> list[Recording]:
    recordings = []
    for person, stamps in PEOPLE.items():
        for stamp in stamps:
            video = next((data_dir / "gaze" / "eyegaze").glob(f"*/game_video_{stamp}.mp4"))
            rows = list(csv.DictReader((video.parent / f"game_coordinates_{stamp}.csv").open()))
            frames = load_recording(video, landmarker, cache_dir)
            n = min(len(frames), len(rows))
            cells = []
            for row in rows[:n]:
                x = min(max(float(row["GameX"]), 0), GAME_WIDTH - 1)
                y = min(max(float(row["GameY"]), 0), GAME_HEIGHT - 1)
                cells.append(cell_at(int(y // (GAME_HEIGHT / 2)), int(x // (GAME_WIDTH / 3))))
            recordings.append(Recording(person, stamp, frames[:n], cells))
    return recordings


def dwell_windows(recordings: list[Recording], duration: float) -> dict[str, dict[int, list[list[GazeFrame]]]]:
    """person -> cell -> windows (frames re-timed to start at 0), several per long dwell."""
    found: dict[str, dict[int, list[list[GazeFrame]]]] = defaultdict(lambda: defaultdict(list))
    for rec in recordings:
        times = np.array([f.t for f in rec.frames])
        start = 0
        for i in range(1, len(rec.cells) + 1):
            if i < len(rec.cells) and rec.cells[i] == rec.cells[start]:
                continue
            first, last = times[start] + PURSUIT_LAG, times[i - 1] + PURSUIT_LAG
            offset = first
            while offset + duration <= last:
                window = [replace(f, t=f.t - offset) for f in rec.frames if offset <= f.t < offset + duration]
                found[rec.person][rec.cells[start]].append(window)
                offset += duration / 2
            start = i
    return found


def join(windows: list[list[GazeFrame]], duration: float) -> list[GazeFrame]:
    return [replace(f, t=f.t + k * duration) for k, window in enumerate(windows) for f in window]


def covered_sequences(cells: dict[int, list]) -> list[tuple[int, ...]]:
    return [s for s in SEQUENCES if all(cells.get(c) for c in s)]


def decimate(times: list[float], interval: float) -> list[int]:
    """Indices of the frames the scorer's ``read_frames(interval=...)`` would keep."""
    kept, last = [], -np.inf
    for i, t in enumerate(times):
        if t - last >= 0.9 * interval:
            kept.append(i)
            last = t
    return kept


def photo_attack(
    frame_rgb: np.ndarray, tracker: GazeTracker, seconds: float, moving: bool, rng: random.Random, interval: float
) -> list[GazeFrame]:
    height, width = frame_rgb.shape[:2]
    frames = []
    phase = [rng.uniform(0, 6.28) for _ in range(4)]
    for i in decimate([i / 30 for i in range(int(seconds * 30))], interval):
        t = i / 30
        if moving:  # a hand: slow sway of a few percent, tilt of a few degrees, breathing-like scale
            dx = 0.04 * width * np.sin(0.7 * t + phase[0])
            dy = 0.03 * height * np.sin(0.9 * t + phase[1])
            angle = 4 * np.sin(0.5 * t + phase[2])
            scale = 1 + 0.04 * np.sin(0.6 * t + phase[3])
        else:
            dx, dy, angle, scale = rng.gauss(0, 0.5), rng.gauss(0, 0.5), rng.gauss(0, 0.1), 1.0
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        matrix[:, 2] += (dx, dy)
        warped = cv2.warpAffine(frame_rgb, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
        frames.append(tracker.track(warped, t))
    return frames


def rate(outcomes: list[bool]) -> float:
    return float(np.mean(outcomes)) if outcomes else float("nan")


def run(
    data_dir: Path,
    landmarker: Path,
    cache_dir: Path,
    params: ValidatorParams,
    duration: float = 3.0,
    trials: int = 400,
    photo_trials: int = 20,
    seed: int = 11,
    interval: float = 0.0,
) -> dict[str, object]:
    """``interval`` keeps frames at least that many seconds apart, as the scorer does."""
    rng = random.Random(seed)
    started = time.perf_counter()
    recordings = load_recordings(data_dir, landmarker, cache_dir)
    for rec in recordings:
        keep = decimate([f.t for f in rec.frames], interval)
        rec.frames, rec.cells = [rec.frames[i] for i in keep], [rec.cells[i] for i in keep]
    windows = dwell_windows(recordings, duration)
    results: dict[str, object] = {"area_duration": duration, "interval": interval, "people": {}}
    for person in PEOPLE:
        cells = windows[person]
        sequences = covered_sequences(cells)
        if not sequences:
            continue

        def genuine(sequence: tuple[int, ...], cells: dict[int, list[list[GazeFrame]]] = cells) -> list[GazeFrame]:
            return join([rng.choice(cells[c]) for c in sequence], duration)

        genuine_pass, accuracies, replay_pass, random_pass = [], [], [], []
        for _ in range(trials):
            sequence = rng.choice(sequences)
            verdict = validate(genuine(sequence), Challenge(sequence, duration), params)
            genuine_pass.append(verdict.passed)
            accuracies.append(verdict.overall_accuracy)
            others = [s for s in sequences if s != sequence]
            if others:
                replayed = genuine(rng.choice(others))
                replay_pass.append(validate(replayed, Challenge(sequence, duration), params).passed)
            rec = rng.choice([r for r in recordings if r.person == person])
            start = rng.uniform(0, rec.frames[-1].t - 3 * duration)
            wander = [replace(f, t=f.t - start) for f in rec.frames if start <= f.t < start + 3 * duration]
            random_pass.append(validate(wander, Challenge(rng.choice(SEQUENCES), duration), params).passed)

        photo_still, photo_moved = [], []
        videos = [next((data_dir / "gaze" / "eyegaze").glob(f"*/game_video_{s}.mp4")) for s in PEOPLE[person]]
        stills = [f.rgb for video in videos for f in read_frames(video, max_frames=1000, interval=1.0)]
        for _ in range(photo_trials):  # photo attacks are tracked frame by frame, at the scorer's frame interval
            still = rng.choice(stills)
            for moving, bucket in ((False, photo_still), (True, photo_moved)):
                with GazeTracker(landmarker) as tracker:
                    frames = photo_attack(still, tracker, 3 * duration, moving, rng, interval)
                bucket.append(validate(frames, Challenge(rng.choice(SEQUENCES), duration), params).passed)

        results["people"][person] = {  # type: ignore[index]
            "sequences_covered": len(sequences),
            "genuine_pass_rate": rate(genuine_pass),
            "genuine_mean_accuracy": float(np.mean(accuracies)),
            "replay_pass_rate": rate(replay_pass),
            "random_gaze_pass_rate": rate(random_pass),
            "photo_still_pass_rate": rate(photo_still),
            "photo_moved_pass_rate": rate(photo_moved),
            "trials": trials,
            "photo_trials": photo_trials,
        }
    results["seconds"] = time.perf_counter() - started
    return results


def report(result: dict[str, object]) -> str:
    lines = [f"simulated challenges, area duration {result['area_duration']} s, frames every {result['interval']} s"]
    header = f"{'person':<7}{'seqs':>5}{'genuine':>9}{'accuracy':>10}{'replay':>8}{'random':>8}{'photo':>8}{'moved':>8}"
    lines.append(header)
    for person, r in result["people"].items():  # type: ignore[union-attr]
        lines.append(
            f"{person:<7}{r['sequences_covered']:>5}{100 * r['genuine_pass_rate']:>8.1f}%"
            f"{r['genuine_mean_accuracy']:>10.3f}"
            f"{100 * r['replay_pass_rate']:>7.1f}%{100 * r['random_gaze_pass_rate']:>7.1f}%"
            f"{100 * r['photo_still_pass_rate']:>7.1f}%{100 * r['photo_moved_pass_rate']:>7.1f}%"
        )
    lines.append("(pass rates: genuine should be high, every attack column low)")
    return "\n".join(lines)
