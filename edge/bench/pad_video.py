"""``facematch bench pad --video``: the video-level anti-spoofing cues on genuine recordings and on simulated attacks
made from them, cue by cue and combined as the scorer combines them.

- genuine: 9 s clips, starting every 3 s, of the real recordings in ``gaze/eyegaze`` and ``video/`` (every face
  video there);
- print: the clip's middle frame "printed" (contrast squeezed towards paper white, slight blur, paper grain), laid on
  a background at 75 % of the frame and moved by hand (sway, roll, zoom and a perspective tilt of up to ~20°);
- screen: the clip itself shown on a simulated screen (black bezel, moiré from the pixel grid, gamma, a blue cast, a
  faint reflection), filmed at 85 % of the frame.

Both attacks are filmed again: sensor noise (σ 2.5) and JPEG compression (quality 85) on every frame, as a camera adds.
Every clip goes through the scorer's own sampling (one frame a second: YuNet box, MiniFASNet pair, moiré window).
The moiré cue is also run on the real screen and phone replays of ``spoof/labels.csv``: the simulation is what the
cue was designed against, those photos are what it has to face.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.bench.lfw import roc_auc
from edge.liveness.presentation import PresentationEvidence, PresentationParams, judge
from edge.vision.engine import FaceEngine
from edge.vision.moire import face_spectrum, screen_pattern_score
from edge.vision.video import read_frames

CLIP_SECONDS = 9
CLIP_STRIDE = 3
SAMPLE_INTERVAL = 1.0
ATTACKS = ("print", "screen")


def recordings(data_dir: Path) -> list[Path]:
    videos = sorted((data_dir / "gaze" / "eyegaze").glob("*/*.mp4"))
    videos += sorted(p for p in (data_dir / "video").rglob("*") if p.suffix in (".mp4", ".mov"))
    return videos


def clips(video: Path) -> Iterator[list[np.ndarray]]:
    """9 s clips starting every 3 s, as BGR frames one second apart."""
    frames = [
        cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR)
        for f in read_frames(video, max_frames=100_000, interval=SAMPLE_INTERVAL, max_side=960)
    ]
    for start in range(0, len(frames) - CLIP_SECONDS + 1, CLIP_STRIDE):
        yield frames[start : start + CLIP_SECONDS]


def filmed(frame: np.ndarray, rng: random.Random) -> np.ndarray:
    """What a camera adds when it films the attack: sensor noise and compression."""
    noisy = frame.astype(np.float32) + np.random.default_rng(rng.randrange(1 << 30)).normal(0, 2.5, frame.shape)
    _, encoded = cv2.imencode(".jpg", np.clip(noisy, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def printed(frame: np.ndarray, rng: random.Random, count: int) -> list[np.ndarray]:
    height, width = frame.shape[:2]
    paper = frame.astype(np.float32) * 0.78 + 45  # ink on paper: no true blacks, duller whites
    paper = cv2.GaussianBlur(paper, (0, 0), 0.8)
    paper += np.random.default_rng(rng.randrange(1 << 30)).normal(0, 4, paper.shape)  # grain
    paper = np.clip(paper, 0, 255).astype(np.uint8)
    background = np.full_like(frame, rng.randrange(60, 200))
    phase = [rng.uniform(0, 6.3) for _ in range(6)]
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    out = []
    for i in range(count):
        t = i * SAMPLE_INTERVAL
        hand = np.vstack([
            cv2.getRotationMatrix2D((width / 2, height / 2), 5 * np.sin(0.5 * t + phase[0]),
                                    0.75 * (1 + 0.05 * np.sin(0.6 * t + phase[1]))),
            [0, 0, 1],
        ])  # fmt: skip
        hand[:2, 2] += (0.05 * width * np.sin(0.7 * t + phase[2]), 0.04 * height * np.sin(0.9 * t + phase[3]))
        tilt = np.eye(3)
        tilt[2, :2] = 0.0004 * np.sin(0.4 * t + phase[4]), 0.0004 * np.sin(0.3 * t + phase[5])
        matrix = hand @ np.linalg.inv(centre) @ tilt @ centre
        mask = cv2.warpPerspective(np.full((height, width), 255, np.uint8), matrix, (width, height))
        warped = cv2.warpPerspective(paper, matrix, (width, height))
        out.append(filmed(np.where(mask[..., None] > 0, warped, background), rng))
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
        out.append(filmed(canvas, rng))
    return out


def evidence(engine: FaceEngine, frames: list[np.ndarray]) -> PresentationEvidence:
    """What the scorer samples once a second: the anti-spoofing pair and the moiré window around the face."""
    found = PresentationEvidence()
    for frame in frames:
        faces = engine.detector.detect(frame)
        if faces:
            found.live_probabilities.append(engine.pad.score(frame, faces[0]).live_probability)
            spectrum = face_spectrum(frame, faces[0].box)
            if spectrum is not None:
                found.screen_spectra.append(spectrum)
    return found


def real_replays(data_dir: Path, engine: FaceEngine) -> list[dict[str, object]]:
    """The moiré score of each full-frame photo in spoof/labels.csv (live ones and screen or phone replays)."""
    spoof_dir = data_dir / "spoof"
    rows = []
    for row in csv.DictReader((spoof_dir / "labels.csv").open()) if (spoof_dir / "labels.csv").exists() else []:
        if "NUAA" in row["source"] or "CelebA" in row["source"] or row["attack"] == "print":
            continue  # tight crops, a dataset whose live and spoof come from different sources, paper
        image = cv2.imread(str(spoof_dir / row["path"]))
        faces = engine.detector.detect(image) if image is not None else []
        if faces:
            spectrum = face_spectrum(image, faces[0].box)
            score = screen_pattern_score([spectrum]) if spectrum is not None else None
            rows.append({"path": row["path"], "label": row["label"], "attack": row["attack"] or "-", "screen": score})
    return rows


def cue_figures(genuine: np.ndarray, attacks: dict[str, np.ndarray], live_high: bool) -> dict[str, object]:
    """AUC per attack and APCER at the threshold that refuses 3 % of genuine clips, for one clip-level score."""
    sign = 1.0 if live_high else -1.0  # orient every score so that higher means live
    threshold = float(np.quantile(sign * genuine, 0.03))
    result: dict[str, object] = {"threshold_for_bpcer_3pct": sign * threshold, "auc": {}, "apcer_at_bpcer_3pct": {}}
    for kind, scores in attacks.items():
        labels = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(scores), bool)])
        result["auc"][kind] = roc_auc(sign * np.concatenate([genuine, scores]), labels)  # type: ignore[index]
        result["apcer_at_bpcer_3pct"][kind] = float((sign * scores >= threshold).mean())  # type: ignore[index]
    return result


def run(data_dir: Path, engine: FaceEngine, params: PresentationParams, seed: int = 5) -> dict[str, object]:
    rng = random.Random(seed)
    texture: dict[str, list[float]] = {"genuine": [], "print": [], "screen": []}
    screen: dict[str, list[float]] = {"genuine": [], "print": [], "screen": []}
    refused: dict[str, list[bool]] = {"genuine": [], "print": [], "screen": []}
    by_folder: dict[str, list[bool]] = {}
    for video in recordings(data_dir):
        for clip in clips(video):
            made = {"genuine": clip, "print": printed(clip[len(clip) // 2], rng, len(clip)),
                    "screen": on_screen(clip, rng)}  # fmt: skip
            for kind, frames in made.items():
                found = evidence(engine, frames)
                if len(found.live_probabilities) < params.min_texture_frames:
                    continue  # no face in the clip: nothing for anti-spoofing to judge
                verdict = judge(found, params)
                texture[kind].append(verdict.live_probability)  # type: ignore[arg-type]
                screen[kind].append(verdict.screen_pattern if verdict.screen_pattern is not None else 0.0)
                refused[kind].append(not verdict.passed)
                if kind == "genuine":
                    by_folder.setdefault(video.parent.name, []).append(not verdict.passed)
    as_arrays = {cue: {k: np.array(v) for k, v in scores.items()} for cue, scores in
                 (("texture", texture), ("screen_pattern", screen))}  # fmt: skip
    replays = real_replays(data_dir, engine)
    return {
        "texture_threshold": params.texture_threshold,
        "screen_pattern_threshold": params.screen_pattern_threshold,
        "clips": {k: len(v) for k, v in refused.items()},
        "bpcer": float(np.mean(refused["genuine"])),
        "apcer": {k: 1.0 - float(np.mean(refused[k])) for k in ATTACKS},
        "genuine_bpcer_by_folder": {k: float(np.mean(v)) for k, v in by_folder.items()},
        "cues": {
            cue: cue_figures(scores["genuine"], {k: scores[k] for k in ATTACKS}, live_high=cue == "texture")
            | {"percentiles_5_50_95": {k: np.percentile(v, [5, 50, 95]).round(4).tolist() for k, v in scores.items()}}
            for cue, scores in as_arrays.items()
        },
        "screen_pattern_on_real_photos": replays,
    }


def report(result: dict[str, object]) -> str:
    apcer = result["apcer"]
    lines = [
        f"video-level anti-spoofing, 9 s clips {result['clips']}",
        f"as the scorer decides (texture < {result['texture_threshold']} or screen pattern > "
        f"{result['screen_pattern_threshold']}): BPCER {100 * result['bpcer']:.1f} %, APCER "
        + ", ".join(f"{k} {100 * v:.1f} %" for k, v in apcer.items()),  # type: ignore[union-attr]
        "genuine BPCER by folder: "
        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in result["genuine_bpcer_by_folder"].items()),  # type: ignore[union-attr]
        f"{'cue':<16}{'clips':<8}{'p5':>9}{'median':>9}{'p95':>9}",
    ]
    for cue, figures in result["cues"].items():  # type: ignore[union-attr]
        for kind, (p5, p50, p95) in figures["percentiles_5_50_95"].items():
            lines.append(f"{cue:<16}{kind:<8}{p5:>9.3f}{p50:>9.3f}{p95:>9.3f}")
    for cue, figures in result["cues"].items():  # type: ignore[union-attr]
        lines.append(
            f"{cue}: AUC " + ", ".join(f"{k} {v:.3f}" for k, v in figures["auc"].items())
            + f"; at BPCER 3 % (threshold {figures['threshold_for_bpcer_3pct']:.4f}) APCER "
            + ", ".join(f"{k} {100 * v:.1f} %" for k, v in figures["apcer_at_bpcer_3pct"].items())
        )  # fmt: skip
    lines.append("screen pattern on the real photos of spoof/: " + ", ".join(
        f"{Path(str(r['path'])).name} ({r['attack'] if r['label'] == 'spoof' else 'live'}) {r['screen'] or 0:.2f}"
        for r in result["screen_pattern_on_real_photos"]  # type: ignore[union-attr]
    ))  # fmt: skip
    return "\n".join(lines)
