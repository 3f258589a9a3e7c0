"""``facematch bench pad --video``: the video-level anti-spoofing verdict on genuine recordings and on simulated
attacks made from them.

- genuine: 9 s stretches of the real recordings in ``gaze/eyegaze`` and ``video/`` (every face video there);
- print: one frame of a recording, "printed" (contrast squeezed towards paper white, slight blur, paper grain), laid on
  a background at 75 % of the frame and moved by hand (slow sway, tilt, zoom);
- screen: the recording itself shown on a simulated screen (black bezel, moiré from the pixel grid, gamma and a blue
  cast, a faint reflection), filmed at 85 % of the frame.

Each clip goes through the scorer's own sampling (one frame a second, YuNet box, MiniFASNet pair) and ``judge``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.liveness.presentation import PresentationParams, judge
from edge.vision.engine import FaceEngine
from edge.vision.video import read_frames

CLIP_SECONDS = 9.0
SAMPLE_INTERVAL = 1.0


def recordings(data_dir: Path) -> list[Path]:
    videos = sorted((data_dir / "gaze" / "eyegaze").glob("*/*.mp4"))
    videos += sorted(p for p in (data_dir / "video").rglob("*") if p.suffix in (".mp4", ".mov"))
    return videos


def clips(video: Path) -> Iterator[list[np.ndarray]]:
    """Consecutive 9 s clips, as BGR frames one second apart."""
    frames = [
        cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR)
        for f in read_frames(video, max_frames=100_000, interval=SAMPLE_INTERVAL, max_side=960)
    ]
    per_clip = int(CLIP_SECONDS / SAMPLE_INTERVAL)
    for start in range(0, len(frames) - per_clip + 1, per_clip):
        yield frames[start : start + per_clip]


def printed(frame: np.ndarray, rng: random.Random, count: int) -> list[np.ndarray]:
    height, width = frame.shape[:2]
    paper = frame.astype(np.float32) * 0.78 + 45  # ink on paper: no true blacks, duller whites
    paper = cv2.GaussianBlur(paper, (0, 0), 0.8)
    paper += np.random.default_rng(rng.randrange(1 << 30)).normal(0, 4, paper.shape)  # grain
    paper = np.clip(paper, 0, 255).astype(np.uint8)
    background = np.full_like(frame, rng.randrange(60, 200))
    phase = [rng.uniform(0, 6.3) for _ in range(4)]
    out = []
    for i in range(count):
        t = i * SAMPLE_INTERVAL
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 5 * np.sin(0.5 * t + phase[0]),
                                         0.75 * (1 + 0.05 * np.sin(0.6 * t + phase[1])))  # fmt: skip
        matrix[:, 2] += (0.05 * width * np.sin(0.7 * t + phase[2]), 0.04 * height * np.sin(0.9 * t + phase[3]))
        mask = cv2.warpAffine(np.full((height, width), 255, np.uint8), matrix, (width, height))
        warped = cv2.warpAffine(paper, matrix, (width, height))
        out.append(np.where(mask[..., None] > 0, warped, background))
    return out


def on_screen(frames: list[np.ndarray], rng: random.Random) -> list[np.ndarray]:
    height, width = frames[0].shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0.1, 0.5), rng.uniform(3.0, 6.0)
    moire = 1 + 0.08 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period)
    reflection = cv2.GaussianBlur(np.random.default_rng(rng.randrange(1 << 30)).uniform(0, 25, (height, width)),
                                  (0, 0), 25)  # fmt: skip
    out = []
    for frame in frames:
        shown = (frame.astype(np.float32) / 255) ** 1.25 * 255  # the screen's gamma
        shown = shown * moire[..., None] + reflection[..., None]
        shown[..., 0] *= 1.08  # a blue cast (BGR)
        shown = np.clip(shown, 0, 255).astype(np.uint8)
        screen = cv2.resize(shown, (int(width * 0.85), int(height * 0.85)))
        canvas = np.full_like(frame, 12)  # the bezel and the dark room around it
        top, left = (height - screen.shape[0]) // 2, (width - screen.shape[1]) // 2
        canvas[top : top + screen.shape[0], left : left + screen.shape[1]] = screen
        out.append(canvas)
    return out


def verdict(engine: FaceEngine, frames: list[np.ndarray]) -> float | None:
    """The mean live probability over the sampled frames (None when no face was found in two)."""
    live = []
    for frame in frames:
        faces = engine.detector.detect(frame)
        if faces:
            live.append(engine.pad.score(frame, faces[0]).live_probability)
    result = judge(live, [], [], PresentationParams(texture_threshold=engine.pad.threshold))
    return result.live_probability if result.frames_scored >= 2 else None


def run(data_dir: Path, engine: FaceEngine, seed: int = 5) -> dict[str, object]:
    rng = random.Random(seed)
    scores: dict[str, list[float]] = {"genuine": [], "print": [], "screen": []}
    per_source: dict[str, list[float]] = {}
    for video in recordings(data_dir):
        for clip in clips(video):
            for kind, frames in (("genuine", clip), ("print", printed(clip[len(clip) // 2], rng, len(clip))),
                                 ("screen", on_screen(clip, rng))):  # fmt: skip
                score = verdict(engine, frames)
                if score is not None:
                    scores[kind].append(score)
                    if kind == "genuine":
                        per_source.setdefault(video.parent.name, []).append(score)
    threshold = engine.pad.threshold
    genuine = np.array(scores["genuine"])
    at_bpcer3 = float(np.quantile(genuine, 0.03)) if len(genuine) else float("nan")
    result: dict[str, object] = {
        "threshold": threshold,
        "clips": {k: len(v) for k, v in scores.items()},
        "bpcer": float((genuine < threshold).mean()),
        "apcer": {k: float((np.array(scores[k]) >= threshold).mean()) for k in ("print", "screen")},
        "threshold_for_bpcer_3pct": at_bpcer3,
        "apcer_at_bpcer_3pct": {k: float((np.array(scores[k]) >= at_bpcer3).mean()) for k in ("print", "screen")},
        "genuine_bpcer_by_folder": {k: float((np.array(v) < threshold).mean()) for k, v in per_source.items()},
    }
    return result


def report(result: dict[str, object]) -> str:
    apcer = result["apcer"]
    at3 = result["apcer_at_bpcer_3pct"]
    lines = [
        f"video-level anti-spoofing on 9 s clips {result['clips']}, threshold {result['threshold']}",
        f"BPCER {100 * result['bpcer']:.1f} %; APCER print {100 * apcer['print']:.1f} %, "  # type: ignore[index]
        f"screen {100 * apcer['screen']:.1f} %",  # type: ignore[index]
        f"at the threshold giving BPCER 3 % ({result['threshold_for_bpcer_3pct']:.4f}): APCER print "
        f"{100 * at3['print']:.1f} %, screen {100 * at3['screen']:.1f} %",  # type: ignore[index]
        "genuine BPCER by folder: "
        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in result["genuine_bpcer_by_folder"].items()),  # type: ignore[union-attr]
    ]
    return "\n".join(lines)
