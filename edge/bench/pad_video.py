"""``facematch bench pad --video``: the video-level anti-spoofing cues on genuine recordings and on simulated attacks
made from them, cue by cue and combined as the scorer combines them.

- genuine: 9 s clips, starting every 3 s, of the real recordings in ``gaze/eyegaze`` and ``video/`` (every face
  video there);
- print: the clip's middle frame "printed" (contrast squeezed towards paper white, slight blur, paper grain) and moved
  by hand (sway, roll, zoom and a perspective tilt of up to ~20°) in front of a room (the clip's first frame, mirrored
  and blurred, its faces smudged away): *sheet*, the whole frame on a sheet filling 75 % of the view; *portrait*, a
  head-and-shoulders crop showing the face at about its real size;
- screen: the clip itself shown on a simulated screen (black bezel, moiré from the pixel grid, gamma, a blue cast, a
  faint reflection), filmed at 85 % of the frame.

Both attacks are filmed again: sensor noise (σ 2.5) and JPEG compression (quality 85) on every frame, as a camera adds.
Every clip goes through the scorer's own per-frame work (``track_frame``: landmarks and motion samples every 0.5 s,
the MiniFASNet pair and the moiré window every 1 s) and its verdict (``judge``). The moiré cue is also run on the real
screen and phone replays of ``spoof/labels.csv``: the simulation is what the cue was designed against, those photos
are what it has to face.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel

from edge.bench.lfw import roc_auc
from edge.bench.result import BenchError, BenchResult
from edge.config import Settings
from edge.inference.liveness import ANTISPOOF_INTERVAL, MOTION_INTERVAL, Tracked, track_frame
from edge.liveness.presentation import PresentationParams, judge
from edge.liveness.validator import ValidatorParams
from edge.progress import progress
from edge.vision.engine import FaceEngine
from edge.vision.gaze import GazeTracker
from edge.vision.moire import face_spectrum, screen_pattern_score
from edge.vision.video import Frame, read_frames

CLIP_SECONDS = 9
CLIP_STRIDE = 3
SAMPLE_INTERVAL = MOTION_INTERVAL  # 0.5 s; anti-spoofing every other sample, as the scorer does
ATTACKS = ("print_sheet", "print_portrait", "screen")
CUES = {"texture": True, "screen_pattern": False, "picture_motion": True}  # cue -> higher means live


class CueFigures(BaseModel):
    clips_with_an_opinion: dict[str, int]
    percentiles_5_50_95: dict[str, list[float]]
    threshold_for_bpcer_3pct: float | None = None
    auc: dict[str, float] = {}
    apcer_at_bpcer_3pct: dict[str, float] = {}


class AcceptedAttack(BaseModel):
    kind: str
    video: str
    start_s: float
    texture: float | None
    screen_pattern: float | None
    picture_motion: float | None


class RealPhoto(BaseModel):
    path: str
    label: str
    attack: str
    screen: float | None


class PadVideoResult(BenchResult):
    thresholds: dict[str, float]
    clips: dict[str, int]
    not_acquired: dict[str, int]
    bpcer: float
    apcer: dict[str, float]
    genuine_bpcer_by_source: dict[str, float]
    attacks_accepted: list[AcceptedAttack]
    cues: dict[str, CueFigures]
    screen_pattern_on_real_photos: list[RealPhoto]

    def report(self) -> str:
        thresholds = self.thresholds
        lines = [
            f"video-level anti-spoofing, 9 s clips judged {self.clips}",
            f"not acquired (one face followed in under half the frames: the gaze challenge refuses these; "
            f"ISO/IEC 30107-3 non-responses, outside APCER and BPCER) {self.not_acquired}",
            f"as the scorer decides (texture < {thresholds['texture']}, screen pattern > "
            f"{thresholds['screen_pattern']}, picture motion < {thresholds['picture_motion']}): "
            f"BPCER {100 * self.bpcer:.1f} %, APCER "
            + ", ".join(f"{k} {100 * v:.1f} %" for k, v in self.apcer.items()),
            "genuine BPCER by source: "
            + ", ".join(f"{k} {100 * v:.0f} %" for k, v in self.genuine_bpcer_by_source.items()),
            "attacks accepted: "
            + (", ".join(f"{a.kind} {a.video} @{a.start_s} s" for a in self.attacks_accepted) or "none"),
            f"{'cue':<16}{'clips':<13}{'opinions':>9}{'p5':>9}{'median':>9}{'p95':>9}",
        ]
        for cue, figures in self.cues.items():
            for kind, count in figures.clips_with_an_opinion.items():
                p5, p50, p95 = figures.percentiles_5_50_95.get(kind, (float("nan"),) * 3)
                lines.append(f"{cue:<16}{kind:<13}{count:>9}{p5:>9.3f}{p50:>9.3f}{p95:>9.3f}")
        for cue, figures in self.cues.items():
            if figures.auc:
                lines.append(
                    f"{cue}: AUC " + ", ".join(f"{k} {v:.3f}" for k, v in figures.auc.items())
                    + f"; at BPCER 3 % (threshold {figures.threshold_for_bpcer_3pct:.4f}) APCER "
                    + ", ".join(f"{k} {100 * v:.1f} %" for k, v in figures.apcer_at_bpcer_3pct.items())
                )  # fmt: skip
        lines.append("(a cue with no opinion on a clip does not refuse it; AUC and APCER count the clips it judged)")
        lines.append("screen pattern on the real photos of spoof/: " + ", ".join(
            f"{Path(r.path).name} ({r.attack if r.label == 'spoof' else 'live'}) {r.screen or 0:.2f}"
            for r in self.screen_pattern_on_real_photos
        ))  # fmt: skip
        return "\n".join(lines)


def main(args: argparse.Namespace, settings: Settings) -> PadVideoResult:
    from edge.inference.liveness import scoring_params
    from models import model_path

    if not recordings(args.data):
        raise BenchError(f"no face videos under {args.data}/gaze/eyegaze or {args.data}/video")
    landmarker = model_path(settings.models.dir, "face_landmarker")
    params = scoring_params(settings.liveness)[1]
    return run(args.data, FaceEngine(settings), landmarker, params, seed=args.seed)


def recordings(data_dir: Path) -> list[Path]:
    videos = sorted((data_dir / "gaze" / "eyegaze").glob("*/*.mp4"))
    videos += sorted(p for p in (data_dir / "video").rglob("*") if p.suffix in (".mp4", ".mov"))
    return videos


def source_of(video: Path, data_dir: Path) -> str:
    """``gaze/eyegaze/vertical/x.mp4`` -> ``eyegaze vertical``; ``video/<repository>/…`` -> ``<repository>``."""
    parts = video.relative_to(data_dir).parts
    return f"eyegaze {parts[2]}" if parts[0] == "gaze" else parts[1]


def clips(video: Path) -> Iterator[list[np.ndarray]]:
    """9 s clips starting every 3 s, as BGR frames half a second apart."""
    frames = [
        cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR)
        for f in read_frames(video, max_frames=100_000, interval=SAMPLE_INTERVAL, max_side=960)
    ]
    per_clip, stride = round(CLIP_SECONDS / SAMPLE_INTERVAL), round(CLIP_STRIDE / SAMPLE_INTERVAL)
    for start in range(0, len(frames) - per_clip + 1, stride):
        yield frames[start : start + per_clip]


def empty_room(frame: np.ndarray, engine: FaceEngine) -> np.ndarray:
    """The recording's first frame as the room behind a held print: mirrored, out of focus, and with every face in it
    smudged away (the room must not show the person a second time: two faces are a different test)."""
    room = cv2.GaussianBlur(cv2.flip(frame, 1), (0, 0), 1.5)
    for _ in range(3):
        faces = engine.detector.detect(room)
        if not faces:
            break
        for face in faces:
            x, y, w, h = face.box
            left, top = max(0, int(x - 0.4 * w)), max(0, int(y - 0.5 * h))
            right, bottom = min(room.shape[1], int(x + 1.4 * w)), min(room.shape[0], int(y + 1.5 * h))
            if right > left and bottom > top:
                room[top:bottom, left:right] = cv2.GaussianBlur(room[top:bottom, left:right], (0, 0), max(w, h) / 3)
    return room


def filmed(frame: np.ndarray, rng: random.Random) -> np.ndarray:
    """What a camera adds when it films the attack: sensor noise and compression."""
    noisy = frame.astype(np.float32) + np.random.default_rng(rng.randrange(1 << 30)).normal(0, 2.5, frame.shape)
    _, encoded = cv2.imencode(".jpg", np.clip(noisy, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def printed(
    frame: np.ndarray,
    face: tuple[float, float, float, float] | None,
    room: np.ndarray,
    rng: random.Random,
    count: int,
) -> list[np.ndarray]:
    """The frame printed and moved by hand in front of ``room`` (``empty_room``): the whole frame on a sheet filling
    75 % of the view (``face`` None), or a head-and-shoulders portrait showing the face at about its real size."""
    height, width = frame.shape[:2]
    paper = frame.astype(np.float32) * 0.78 + 45  # ink on paper: no true blacks, duller whites
    paper = cv2.GaussianBlur(paper, (0, 0), 0.8)
    paper += np.random.default_rng(rng.randrange(1 << 30)).normal(0, 4, paper.shape)  # grain
    paper = np.clip(paper, 0, 255).astype(np.uint8)
    background = room
    sheet = np.zeros((height, width), np.uint8)
    if face is None:
        sheet[:] = 255
        pivot, size = (width / 2, height / 2), 0.75
    else:
        x, y, w, h = face
        pivot, size = (x + w / 2, y + h / 2), rng.uniform(0.95, 1.15)
        top, left = max(0, int(pivot[1] - 1.5 * h)), max(0, int(pivot[0] - 1.3 * w))
        sheet[top : int(pivot[1] + 1.7 * h), left : int(pivot[0] + 1.3 * w)] = 255
    phase = [rng.uniform(0, 6.3) for _ in range(6)]
    centre = np.array([[1, 0, -pivot[0]], [0, 1, -pivot[1]], [0, 0, 1]])
    out = []
    for i in range(count):
        t = i * SAMPLE_INTERVAL
        roll, zoom = 5 * np.sin(0.5 * t + phase[0]), size * (1 + 0.05 * np.sin(0.6 * t + phase[1]))
        hand = np.vstack([cv2.getRotationMatrix2D(pivot, roll, zoom), [0, 0, 1]])
        hand[:2, 2] += (0.05 * width * np.sin(0.7 * t + phase[2]), 0.04 * height * np.sin(0.9 * t + phase[3]))
        tilt = np.eye(3)
        tilt[2, :2] = 0.0004 * np.sin(0.4 * t + phase[4]), 0.0004 * np.sin(0.3 * t + phase[5])
        matrix = hand @ np.linalg.inv(centre) @ tilt @ centre
        mask = cv2.warpPerspective(sheet, matrix, (width, height))
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


def evidence(engine: FaceEngine, landmarker: Path, frames: list[np.ndarray]) -> Tracked:
    """What the scorer collects from these frames (half a second apart), through its own per-frame function."""
    tracked = Tracked()
    every = round(ANTISPOOF_INTERVAL / SAMPLE_INTERVAL)
    with GazeTracker(landmarker) as tracker:
        for i, frame in enumerate(frames):
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            tracked.add(track_frame(tracker, Frame(i * SAMPLE_INTERVAL, rgb), engine, i % every == 0, True))
    return tracked


def acquired(tracked: Tracked, params: PresentationParams) -> bool:
    """Whether the scorer had a face to judge: the detector found it for anti-spoofing, and the landmarker followed
    one face through at least the share of frames the gaze challenge needs (fewer, and the challenge refuses the
    video whatever the anti-spoofing cues say: ISO/IEC 30107-3 counts that as a non-response, not a decision)."""
    followed = np.mean([f.face for f in tracked.frames]) if tracked.frames else 0.0
    enough_texture = len(tracked.presentation.live_probabilities) >= params.min_texture_frames
    return enough_texture and followed >= ValidatorParams.min_usable


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


def run(
    data_dir: Path, engine: FaceEngine, landmarker: Path, params: PresentationParams, seed: int = 5
) -> PadVideoResult:
    rng = random.Random(seed)
    kinds = ("genuine", *ATTACKS)
    clips_seen: list[dict[str, object]] = []
    for video in progress(recordings(data_dir), "face videos", unit="video"):
        for number, clip in enumerate(clips(video)):
            middle = clip[len(clip) // 2]
            faces = engine.detector.detect(middle)
            room = empty_room(clip[0], engine)
            made = {
                "genuine": clip,
                "print_sheet": printed(middle, None, room, rng, len(clip)),
                "print_portrait": printed(middle, faces[0].box, room, rng, len(clip)) if faces else [],
                "screen": on_screen(clip, rng),
            }
            for kind, frames in made.items():
                if not frames:
                    continue
                tracked = evidence(engine, landmarker, frames)
                verdict = judge(tracked.presentation, params)
                clips_seen.append({
                    "kind": kind, "source": source_of(video, data_dir), "video": video.name,
                    "start_s": number * CLIP_STRIDE, "acquired": acquired(tracked, params),
                    "refused": not verdict.passed, "texture": verdict.live_probability,
                    "screen_pattern": verdict.screen_pattern, "picture_motion": verdict.picture_motion,
                })  # fmt: skip
    judged = [c for c in clips_seen if c["acquired"]]
    figures = {}
    for cue, live_high in CUES.items():
        arrays = {k: np.array([c[cue] for c in judged if c["kind"] == k and c[cue] is not None]) for k in kinds}
        figures[cue] = {
            "clips_with_an_opinion": {k: len(v) for k, v in arrays.items()},
            "percentiles_5_50_95": {
                k: np.percentile(v, [5, 50, 95]).round(4).tolist() for k, v in arrays.items() if len(v)
            },
        }
        attacks = {k: arrays[k] for k in ATTACKS if len(arrays[k])}
        if len(arrays["genuine"]) and attacks:
            figures[cue] |= cue_figures(arrays["genuine"], attacks, live_high=live_high)

    def refused(kind: str) -> list[bool]:
        return [bool(c["refused"]) for c in judged if c["kind"] == kind]

    sources = sorted({str(c["source"]) for c in judged if c["kind"] == "genuine"})
    return PadVideoResult.model_validate(
        {
            "thresholds": {
                "texture": params.texture_threshold,
                "screen_pattern": params.screen_pattern_threshold,
                "picture_motion": params.picture_motion_threshold,
            },
            "clips": {k: len(refused(k)) for k in kinds},
            "not_acquired": {k: sum(1 for c in clips_seen if c["kind"] == k and not c["acquired"]) for k in kinds},
            "bpcer": float(np.mean(refused("genuine"))),
            "apcer": {k: 1.0 - float(np.mean(refused(k))) for k in ATTACKS},
            "genuine_bpcer_by_source": {
                source: float(
                    np.mean([c["refused"] for c in judged if c["kind"] == "genuine" and c["source"] == source])
                )
                for source in sources
            },
            "attacks_accepted": [
                {k: c[k] for k in ("kind", "video", "start_s", "texture", "screen_pattern", "picture_motion")}
                for c in judged
                if c["kind"] != "genuine" and not c["refused"]
            ],
            "cues": figures,
            "screen_pattern_on_real_photos": real_replays(data_dir, engine),
        }
    )
