"""``facematch bench gaze``: simulated challenges from the EyeGaze recordings, through the API's validator.

How the challenges are made:
- Sessions are found anywhere under ``--data`` (``game_video_<ts>.mp4`` beside ``game_coordinates_<ts>.csv``) and
  grouped by person with the product's own face matcher (mean SFace embedding of a few frames; sessions whose score
  reaches the match threshold are one person), so recordings of other people need no list. The two people the
  validator was developed on keep their names A and B; anyone else is named C, D, … in the order of their first
  session, and for them the shipped rule's figures are held out.
- Each recording's frames go through the same decoding and FaceLandmarker features as an upload. The target's screen
  position of frame i is row i of ``game_coordinates_<ts>.csv``; it is mapped to a cell of a 2×3 grid laid over
  the 2560×1340 game window (column = X in thirds, row = Y in halves).
- A *dwell* is a run of frames whose target stays in one cell. The eyes follow the target ~0.4 s late, so a window
  of ``area_duration`` seconds is cut from [run start + 0.4 s, run end + 0.4 s].
- A genuine challenge joins three such windows of the same person, for the cells of a designed sequence, each cut to
  a length drawn as the server draws it (0.8-1.2 x ``area_duration``; windows are cut from the dwells at the longest)
  and re-timed end to end (``--fixed-lengths``: [0, d), [d, 2d), [2d, 3d)). Only sequences whose cells that person's
  recordings cover are drawn.
- Attacks: *replay*: a genuine challenge made for another sequence, checked against this one; *retimed replay*: a
  genuine challenge checked against the same sequence with newly drawn window lengths (a recording made in advance
  for the right sequence; drawn on a random stream of its own and not used to choose parameters); *random gaze*: 9 s of
  continuous recording (the target, and so the eyes, wander) checked against a random sequence; *photo*: one real
  frame, warped as a photo held still (sub-pixel jitter) or moved by hand (slow drift, tilt, scale), run through
  FaceLandmarker frame by frame.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
import string
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, Field

from edge.bench.gaze_results import GazeCalibrationResult
from edge.bench.result import BenchError, BenchResult
from edge.config import Settings
from edge.liveness.challenge import LENGTH_FACTORS, SEQUENCE_LENGTH, SEQUENCES, Challenge, cell_at
from edge.liveness.validator import ROW_SOURCES, LivenessVerdict, ValidatorParams, validate
from edge.progress import progress
from edge.vision.embed import Embedding
from edge.vision.engine import FaceEngine
from edge.vision.gaze import GazeFrame, GazeTracker
from edge.vision.gaze_net import GazeNet
from edge.vision.video import read_frames

GAME_WIDTH, GAME_HEIGHT = 2560, 1340
PURSUIT_LAG = 0.4
# How genuine challenges (and replays, drawn the same way for another sequence) are put together:
MODES = {
    "joined sessions": "designed sequences; each window from any session of the person",
    "one session": "designed sequences; all three windows from one session",
    "columns, one session": "the three cells of one row in any order, from one session: the horizontal axis alone",
}
# The EyeGaze sessions every rule of the validator was chosen by looking at (docs/LIVENESS.md's persons A and B). The
# bench names them so, and says that the shipped rule's figures on anyone else are held out.
DEVELOPMENT_SESSIONS = {
    "1738772966": "A", "1738773281": "A", "1738773752": "A",
    "1738774660": "B", "1738774720": "B",
}  # fmt: skip
IDENTITY_FRAMES, IDENTITY_INTERVAL = 4, 8.0  # frames per session embedded to tell people apart, seconds apart
# Sessions are one person at a stricter score than the door's: the two people here, both in glasses under the same
# headband and marker, at the same camera, score 0.51-0.89 against each other (85 % of frame pairs reach 0.6), while
# sessions of one person score 0.99 and more.
SAME_PERSON_SCORE = 0.95


@dataclass
class Recording:
    person: str
    name: str
    frames: list[GazeFrame]
    cells: list[int]  # target cell of each frame


def shrunk(rgb: np.ndarray, scale: float) -> np.ndarray:
    """The frame made ``scale`` times as large (a face farther from the camera); 1 leaves it as it is."""
    if scale == 1.0:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def load_recording(
    video: Path, landmarker: Path, cache_dir: Path, net: GazeNet | None = None, scale: float = 1.0
) -> list[GazeFrame]:
    """Every frame's features (with ``net``, the gaze network's on every frame too), cached; with ``scale``, of
    every frame shrunk (or grown) by that factor first."""
    # The cache is named by the features' version too: v2 added the face's brightness, net2 the network's reading.
    shrink = f"-x{scale:g}" if scale != 1.0 else ""
    cache = cache_dir / f"{video.stem}-{video.stat().st_size}-v2{'-net2' if net else ''}{shrink}.json"
    if cache.exists():
        return [GazeFrame(**row) for row in json.loads(cache.read_text())]
    with GazeTracker(landmarker, net) as tracker:
        frames = [
            tracker.track(shrunk(f.rgb, scale), f.t, with_net=True) for f in read_frames(video, max_frames=100_000)
        ]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([f.to_dict() for f in frames]))
    return frames


def coordinates_of(video: Path) -> Path:
    """``game_video_<ts>.mp4`` -> ``game_coordinates_<ts>.csv`` beside it."""
    return video.with_name(video.stem.replace("game_video_", "game_coordinates_") + ".csv")


def find_sessions(data_dir: Path) -> list[tuple[Path, Path]]:
    """(video, target coordinates) of every session under ``data_dir``, oldest first."""
    sessions = []
    for video in sorted(data_dir.rglob("game_video_*.mp4"), key=lambda v: v.stem):
        coordinates = coordinates_of(video)
        if coordinates.exists():
            sessions.append((video, coordinates))
    return sessions


def group_by_person(
    videos: list[Path], engine: FaceEngine, threshold: float = SAME_PERSON_SCORE
) -> dict[str, list[Path]]:
    """Sessions of the same person, by the product's face matcher; named A, B, … by first session."""
    embeddings = []
    for video in videos:
        vectors = []
        for frame in itertools.islice(
            read_frames(video, max_frames=100_000, interval=IDENTITY_INTERVAL), IDENTITY_FRAMES
        ):
            analysis = engine.analyze(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR), embed_if_poor=True)
            if analysis.embedding is not None:
                vectors.append(analysis.embedding.vector)
        mean = np.mean(vectors, axis=0) if vectors else None
        embeddings.append(None if mean is None else Embedding(engine.model_id, mean / np.linalg.norm(mean)))
    owner = list(range(len(videos)))  # union-find over sessions that match

    def root(i: int) -> int:
        while owner[i] != i:
            i = owner[i]
        return i

    for i, j in itertools.combinations(range(len(videos)), 2):
        a, b = embeddings[i], embeddings[j]
        if a is not None and b is not None and engine.compare(a, b)[1] >= threshold:
            owner[root(j)] = root(i)
    groups: dict[int, list[Path]] = {}
    for i, video in enumerate(videos):
        if embeddings[i] is not None:
            groups.setdefault(root(i), []).append(video)
    return name_people(list(groups.values()))


def session_stamp(video: Path) -> str:
    return video.stem.removeprefix("game_video_")


def letters() -> Iterator[str]:
    for k in itertools.count():
        yield string.ascii_uppercase[k % 26] * (1 + k // 26)


def name_people(groups: list[list[Path]]) -> dict[str, list[Path]]:
    """The development people keep their letters (A, B: docs/LIVENESS.md's names, whatever else is under ``--data``);
    anyone else gets the next letter after them (C, D, …), in the order of their first session."""
    names: list[str | None] = []
    for videos in groups:
        known = [DEVELOPMENT_SESSIONS[s] for s in map(session_stamp, videos) if s in DEVELOPMENT_SESSIONS]
        names.append(known[0] if known and known[0] not in names else None)
    free = (name for name in letters() if name not in names and name not in DEVELOPMENT_SESSIONS.values())
    return {name or next(free): videos for name, videos in zip(names, groups, strict=True)}


def shipped_rule_provenance(videos: list[Path]) -> str:
    """Whether the shipped rule's figures on this person are held out: what its choices looked at."""
    person = {DEVELOPMENT_SESSIONS.get(session_stamp(v)) for v in videos} - {None}
    if person == {"A"}:
        return "person A, this person: not held out (and its other choices on A and B; see docs/LIVENESS.md)"
    if person:
        return "person A; its other choices on A and B, this person among them: not held out (see docs/LIVENESS.md)"
    return "the development people A and B, never on this person: held out"


def load_recordings(
    people: dict[str, list[Path]], landmarker: Path, cache_dir: Path, screen: tuple[int, int], interval: float = 0.0,
    net: GazeNet | None = None, net_interval: float = 0.0, scale: float = 1.0,
) -> list[Recording]:  # fmt: skip
    """Every session's gaze frames and target cells, keeping frames at least ``interval`` seconds apart (as the
    scorer does), and the gaze network's figures on kept frames at least ``net_interval`` apart."""
    width, height = screen
    recordings = []
    pending = [(person, video) for person, videos in people.items() for video in videos]
    for person, video in progress(pending, "gaze recordings", unit="video"):
        rows = list(csv.DictReader(coordinates_of(video).open()))
        frames = load_recording(video, landmarker, cache_dir, net, scale)
        n = min(len(frames), len(rows))
        cells = []
        for row in rows[:n]:
            x = min(max(float(row["GameX"]), 0), width - 1)
            y = min(max(float(row["GameY"]), 0), height - 1)
            cells.append(cell_at(int(y // (height / 2)), int(x // (width / 3))))
        keep = decimate([f.t for f in frames[:n]], interval)
        kept = [frames[i] for i in keep]
        if net is not None:
            netted = set(decimate([f.t for f in kept], net_interval))
            kept = [f if i in netted else replace(f, net_y=None) for i, f in enumerate(kept)]
        recordings.append(Recording(person, session_stamp(video), kept, [cells[i] for i in keep]))
    return recordings


def dwell_windows(rec: Recording, duration: float) -> dict[int, list[list[GazeFrame]]]:
    """cell -> windows of one session (frames re-timed to start at 0), several per long dwell."""
    found: dict[int, list[list[GazeFrame]]] = defaultdict(list)
    times = np.array([f.t for f in rec.frames])
    start = 0
    for i in range(1, len(rec.cells) + 1):
        if i < len(rec.cells) and rec.cells[i] == rec.cells[start]:
            continue
        first, last = times[start] + PURSUIT_LAG, times[i - 1] + PURSUIT_LAG
        offset = first
        while offset + duration <= last:
            found[rec.cells[start]].append(
                [replace(f, t=f.t - offset) for f in rec.frames if offset <= f.t < offset + duration]
            )
            offset += duration / 2
        start = i
    return found


def join(windows: list[list[GazeFrame]], duration: float, lengths: tuple[float, ...] | None = None) -> list[GazeFrame]:
    """One challenge's frames: window k re-timed to start where the previous ones end. With ``lengths`` (drawn per
    window, as the server does), each window is cut to its own length; otherwise every window lasts ``duration``."""
    if lengths is None:
        return [replace(f, t=f.t + k * duration) for k, window in enumerate(windows) for f in window]
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    return [
        replace(f, t=f.t + start)
        for window, start, length in zip(windows, starts, lengths, strict=True)
        for f in window
        if f.t < length
    ]


def drawn_lengths(duration: float, rng: random.Random) -> tuple[float, ...]:
    """Window lengths as the server draws them (edge.liveness.challenge), from the bench's seeded generator."""
    return tuple(round(duration * rng.choice(LENGTH_FACTORS), 3) for _ in range(SEQUENCE_LENGTH))


def covered_sequences(cells: dict[int, list], sequences: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    return [s for s in sequences if all(cells.get(c) for c in s)]


def column_orders() -> list[tuple[int, ...]]:
    """The three cells of one row in every order: challenges of the horizontal axis alone."""
    return [order for row in (0, 1) for order in itertools.permutations(cell_at(row, c) for c in range(3))]


def pools(recordings: list[Recording], duration: float) -> dict[str, dict[str, list[dict[int, list[list[GazeFrame]]]]]]:
    """person -> mode -> the window pools a challenge of that mode is drawn from (see MODES)."""
    found: dict[str, dict[str, list[dict[int, list[list[GazeFrame]]]]]] = {}
    for person in dict.fromkeys(r.person for r in recordings):
        sessions = [dwell_windows(r, duration) for r in recordings if r.person == person]
        joined: dict[int, list[list[GazeFrame]]] = defaultdict(list)
        for cells in sessions:
            for cell, windows in cells.items():
                joined[cell] += windows
        found[person] = {"joined sessions": [joined], "one session": sessions, "columns, one session": sessions}
    return found


def decimate(times: list[float], interval: float) -> list[int]:
    """Indices of the frames the scorer's ``read_frames(interval=...)`` would keep."""
    kept, last = [], -np.inf
    for i, t in enumerate(times):
        if t - last >= 0.9 * interval:
            kept.append(i)
            last = t
    return kept


def photo_attack(
    frame_rgb: np.ndarray, tracker: GazeTracker, seconds: float, moving: bool, rng: random.Random, interval: float,
    net_interval: float = 0.0,
) -> list[GazeFrame]:  # fmt: skip
    height, width = frame_rgb.shape[:2]
    frames = []
    phase = [rng.uniform(0, 6.28) for _ in range(4)]
    kept = decimate([i / 30 for i in range(int(seconds * 30))], interval)
    netted = {kept[k] for k in decimate([i / 30 for i in kept], net_interval)}
    for i in kept:
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
        frames.append(tracker.track(warped, t, with_net=i in netted))
    return frames


def rate(outcomes: list[bool]) -> float:
    return float(np.mean(outcomes)) if outcomes else float("nan")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of a rate (Wilson score): honest at 0 of n, unlike ± of a normal approximation."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


class Rate(BaseModel):
    """How many of n challenges passed (and, for information, how many were answered "try again")."""

    passed: int
    n: int
    try_again: int = 0

    @property
    def value(self) -> float:
        return self.passed / self.n if self.n else float("nan")

    def text(self) -> str:
        if not self.n:
            return "—"
        low, high = wilson(self.passed, self.n)
        return f"{100 * self.value:.1f}% [{100 * low:.1f}–{100 * high:.1f}]"

    def retry_text(self) -> str:
        return f"{100 * self.try_again / self.n:.1f}%" if self.n else "—"


def tally(verdicts: list) -> Rate:
    return Rate(passed=sum(v.passed for v in verdicts), n=len(verdicts), try_again=sum(v.try_again for v in verdicts))


class ModeFigures(BaseModel):
    sequences: int | None = None
    genuine: Rate | None = None
    genuine_mean_accuracy: float | None = None
    replay: Rate | None = None
    retimed: Rate | None = None  # the genuine recordings against the same sequence with other window lengths
    genuine_fail_reasons: dict[str, int] = {}
    skipped: str | None = None


class RuleFigures(BaseModel):
    """One rule's figures on one person: the shipped parameters, or those chosen with this person held out."""

    params: dict[str, float]
    chosen_on: str  # who the parameters were chosen on
    modes: dict[str, ModeFigures]
    random_gaze: Rate
    photo_still: Rate | None = None
    photo_moved: Rate | None = None


class PersonFigures(BaseModel):
    rules: dict[str, RuleFigures]
    trials: int
    photo_trials: int


class GazeResult(BenchResult):
    area_duration: float
    drawn_lengths: bool = True
    interval: float
    scale: float = 1.0  # every frame shrunk by this before tracking (--scale)
    sessions: dict[str, list[str]]
    eye_width: dict[str, float] = Field(default_factory=dict)  # median per person, pixels
    modes: dict[str, str]
    grid: dict[str, list[float]]
    people: dict[str, PersonFigures]
    # Beside the calibration-free figures: a per-person calibration learnt on one session and tested on the others
    # (`bench gaze-calibration`, run on the same recordings).
    calibration: GazeCalibrationResult | None = None
    seconds: float

    def report(self) -> str:
        timing = "window lengths drawn 0.8-1.2x per window" if self.drawn_lengths else "fixed window lengths"
        shrunk_by = f", every frame shrunk to {self.scale:g}x before tracking" if self.scale != 1.0 else ""
        lines = [
            f"simulated challenges, area duration {self.area_duration} s ({timing}), frames every {self.interval} s"
            f"{shrunk_by}; rates with their 95 % (Wilson) intervals; 'retry' = answered try again (never a pass)"
        ]
        for person, sessions in self.sessions.items():
            width = self.eye_width.get(person)
            eyes = f"; eyes {width:.1f} px wide (median)" if width else ""
            lines.append(f"person {person}: sessions {', '.join(sessions)}{eyes}")
        for mode, how in self.modes.items():
            lines.append(f"  {mode}: {how}")
        grid = "; ".join(f"{k} {', '.join(f'{v:g}' for v in values)}" for k, values in self.grid.items())
        if any("held-out" in figures.rules for figures in self.people.values()):
            lines.append(f"leave one person out: parameters chosen on the other people from {grid}")
        elif len(self.people) > 1:
            lines.append("leave one person out: not run (--no-leave-one-out); the shipped rule only")
        else:
            lines.append("leave one person out: needs recordings of two people or more; the shipped rule only")
        for person, figures in self.people.items():
            for rule, r in figures.rules.items():
                chosen = ", ".join(f"{k} {v:g}" for k, v in r.params.items())
                lines.append(f"person {person}, {rule} rule ({chosen}; chosen on {r.chosen_on})")
                lines.append(
                    f"  {'challenges':<22}{'seqs':>5}{'genuine':>24}{'retry':>7}{'replay':>24}{'retry':>7}"
                    f"{'retimed replay':>24}{'retry':>7}"
                )
                for mode, m in r.modes.items():
                    if m.skipped or m.genuine is None:
                        lines.append(f"  {mode:<22} skipped: {m.skipped}")
                        continue
                    replay = m.replay or Rate(passed=0, n=0)
                    retimed = m.retimed or Rate(passed=0, n=0)
                    lines.append(
                        f"  {mode:<22}{m.sequences:>5}{m.genuine.text():>24}{m.genuine.retry_text():>7}"
                        f"{replay.text():>24}{replay.retry_text():>7}{retimed.text():>24}{retimed.retry_text():>7}"
                    )
                    if m.genuine_fail_reasons:
                        reasons = ", ".join(f"{code} {count}" for code, count in m.genuine_fail_reasons.items())
                        lines.append(f"    genuine failures by reason: {reasons}")
                attacks = [("random gaze", r.random_gaze), ("photo", r.photo_still), ("photo moved", r.photo_moved)]
                lines.append(
                    "  " + "; ".join(f"{name} {a.text()} (retry {a.retry_text()})" for name, a in attacks if a)
                )
        lines.append(
            "(genuine should be high, every attack low; a figure is evidence for a person only where its rule was "
            "chosen without them: 'held out' above)"
        )
        if self.calibration is not None:
            lines.append(self.calibration.report())
        return "\n".join(lines)


def screen_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, like 2560x1340, not {text!r}") from None
    if min(size) <= 0:
        raise argparse.ArgumentTypeError(f"a screen size must be positive, not {text!r}")
    return size


def positive_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a factor like 0.5, not {text!r}") from None
    if not 0 < value <= 4:
        raise argparse.ArgumentTypeError(f"a scale must be above 0 and at most 4, not {text!r}")
    return value


def add_parser(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("gaze", help="simulated gaze challenges from the EyeGaze recordings")
    parser.add_argument("--data", type=Path, required=True, help="the data folder (with gaze/eyegaze)")
    parser.add_argument("--trials", type=int, default=400, help="genuine/replay/random challenges per person")
    parser.add_argument("--photo-trials", type=int, default=20, help="photo attacks (still and moved) per person")
    parser.add_argument("--interval", type=float, help="seconds between tracked frames (default: the scorer's 0.1)")
    parser.add_argument(
        "--fixed-lengths", dest="vary_lengths", action="store_false",
        help="every window lasts area_duration (as before session 7) instead of 0.8-1.2x of it, drawn per window",
    )  # fmt: skip
    parser.add_argument(
        "--no-leave-one-out", dest="leave_one_out", action="store_false",
        help="only the shipped rule (skips choosing parameters with each person held out: faster)",
    )  # fmt: skip
    parser.add_argument(
        "--screen", type=screen_size, default=(GAME_WIDTH, GAME_HEIGHT), metavar="WxH",
        help="the size of the target window the coordinates refer to (EyeGaze: 2560x1340)",
    )  # fmt: skip
    parser.add_argument(
        "--rows", choices=ROW_SOURCES, default=None,
        help="where the rows are read: the iris; the optional gaze network (CC-BY-NC-SA weights: facematch models "
             "fetch gaze_net); or both added (default: as configured, liveness.gaze_net)",
    )  # fmt: skip
    parser.add_argument(
        "--scale", type=positive_scale, default=1.0,
        help="shrink every frame by this factor before tracking, as if the person stood farther away (0.5: half)",
    )  # fmt: skip
    parser.add_argument(
        "--min-eye-width", type=float, default=None, metavar="PX",
        help="the try-again limit on eye width (default: the validator's); 0 judges every challenge whatever its size",
    )  # fmt: skip
    parser.add_argument(
        "--net-interval", type=float, default=None, help="seconds between frames the network runs on (default: config)"
    )
    parser.set_defaults(bench_main=main)


def main(args: argparse.Namespace, settings: Settings) -> GazeResult:
    from edge.inference.liveness import FRAME_INTERVAL, scoring_params
    from models import model_path

    params, _ = scoring_params(settings.liveness)
    net = None
    net_interval = settings.liveness.gaze_net_interval if args.net_interval is None else args.net_interval
    if args.rows is not None:
        params = replace(params, row_source=args.rows)
    if args.min_eye_width is not None:
        params = replace(params, min_eye_width=args.min_eye_width)
    if params.row_source != "iris":
        net = GazeNet(model_path(settings.models.dir, "gaze_net"))
    people = people_in(args.data, settings)
    return run(
        people, model_path(settings.models.dir, "face_landmarker"), settings.paths.state_dir / "cache" / "gaze",
        params, settings.liveness.area_duration, args.trials, args.photo_trials,
        interval=FRAME_INTERVAL if args.interval is None else args.interval, screen=args.screen,
        leave_one_out=args.leave_one_out, vary_lengths=args.vary_lengths, net=net, net_interval=net_interval,
        scale=args.scale,
    )  # fmt: skip


def people_in(data: Path, settings: Settings) -> dict[str, list[Path]]:
    """The recorded game sessions under ``data``, grouped by the person who plays them."""
    sessions = find_sessions(data)
    if not sessions:
        raise BenchError(f"no game_video_<ts>.mp4 with its game_coordinates_<ts>.csv under {data}")
    return group_by_person([video for video, _ in sessions], FaceEngine(settings))


# The validator's parameters searched when a person is held out (the shipped value of each is in the middle).
GRID: dict[str, list[float]] = {
    "min_gain": [0.01, 0.02, 0.03],
    "min_step": [0.25, 0.5],
    "settle": [0.4, 0.6, 0.8],
    "smooth": [5, 7, 9],
}
SELECTION_TRIALS = 100
MAX_ATTACK_RATE = 0.01


Drawn = list[tuple[list[GazeFrame], Challenge]]  # challenges made once, judged under every rule


@dataclass
class ModeDraws:
    sequences: int
    genuine: Drawn
    replay: Drawn
    retimed: Drawn = field(default_factory=list)


@dataclass
class PersonDraws:
    modes: dict[str, ModeDraws | str]  # a str: why that kind of challenge was skipped
    random_gaze: Drawn
    photo_still: Drawn = field(default_factory=list)
    photo_moved: Drawn = field(default_factory=list)


def draw_challenges(
    person_recordings: list[Recording],
    person_pools: dict[str, list[dict[int, list[list[GazeFrame]]]]],
    duration: float,
    trials: int,
    rng: random.Random,
    vary_lengths: bool = True,
) -> PersonDraws:
    """Genuine, replay and random-gaze challenges of one person. With ``vary_lengths`` each challenge's windows get
    lengths drawn as the server draws them (the pools must hold windows of the longest), and a replay, made for
    another challenge, has its own."""

    def lengths() -> tuple[float, ...] | None:
        return drawn_lengths(duration, rng) if vary_lengths else None

    modes: dict[str, ModeDraws | str] = {}
    for mode, mode_pools in person_pools.items():
        designed = column_orders() if mode.startswith("columns") else list(SEQUENCES)
        usable = [(cells, covered_sequences(cells, designed)) for cells in mode_pools]
        usable = [(cells, sequences) for cells, sequences in usable if sequences]
        if not usable:
            modes[mode] = "the recordings cover no such challenge"
            continue
        genuine: Drawn = []
        replays: Drawn = []
        for _ in range(trials):
            cells, sequences = rng.choice(usable)
            sequence = rng.choice(sequences)
            timing = lengths()
            challenge = Challenge(sequence, duration, timing)
            genuine.append((join([rng.choice(cells[c]) for c in sequence], duration, timing), challenge))
            others = [s for s in sequences if s != sequence]
            if others:
                replays.append(
                    (join([rng.choice(cells[c]) for c in rng.choice(others)], duration, lengths()), challenge)
                )
        modes[mode] = ModeDraws(len({s for _, sequences in usable for s in sequences}), genuine, replays)
    random_gaze: Drawn = []
    for _ in range(trials):
        rec = rng.choice(person_recordings)
        challenge = Challenge(rng.choice(SEQUENCES), duration, lengths())
        total = challenge.total_duration
        start = rng.uniform(0, rec.frames[-1].t - total)
        random_gaze.append(([replace(f, t=f.t - start) for f in rec.frames if start <= f.t < start + total], challenge))
    return PersonDraws(modes, random_gaze)


def draw_retimed(draws: PersonDraws, duration: float, rng: random.Random) -> None:
    """Each genuine challenge's recording checked against its own sequence with window lengths drawn anew: what a
    recording made in advance for the right sequence meets. ``rng`` is a stream of its own, so that adding these
    leaves every other draw as it was."""
    for drawn in draws.modes.values():
        if not isinstance(drawn, str):
            drawn.retimed = [
                (frames, Challenge(challenge.sequence, duration, drawn_lengths(duration, rng)))
                for frames, challenge in drawn.genuine
            ]


def judge(drawn: Drawn, params: ValidatorParams) -> list[LivenessVerdict]:
    return [validate(frames, challenge, params) for frames, challenge in drawn]


def rule_figures(draws: PersonDraws, params: ValidatorParams, chosen_on: str) -> RuleFigures:
    modes = {}
    for mode, drawn in draws.modes.items():
        if isinstance(drawn, str):
            modes[mode] = ModeFigures(skipped=drawn)
            continue
        genuine = judge(drawn.genuine, params)
        reasons = Counter(r for v in genuine for r in v.reasons)
        modes[mode] = ModeFigures(
            sequences=drawn.sequences, genuine=tally(genuine),
            genuine_mean_accuracy=float(np.mean([v.overall_accuracy for v in genuine])),
            replay=tally(judge(drawn.replay, params)), genuine_fail_reasons=dict(reasons.most_common()),
            retimed=tally(judge(drawn.retimed, params)) if drawn.retimed else None,
        )  # fmt: skip
    return RuleFigures(
        params=shown_params(params), chosen_on=chosen_on, modes=modes,
        random_gaze=tally(judge(draws.random_gaze, params)),
        photo_still=tally(judge(draws.photo_still, params)), photo_moved=tally(judge(draws.photo_moved, params)),
    )  # fmt: skip


def params_grid(base: ValidatorParams) -> list[ValidatorParams]:
    names = list(GRID)
    return [
        replace(base, **{n: (int(v) if n == "smooth" else v) for n, v in zip(names, values, strict=True)})
        for values in itertools.product(*(GRID[n] for n in names))
    ]


def choose_params(draws: dict[str, PersonDraws], base: ValidatorParams) -> ValidatorParams:
    """The grid's parameters that pass the most genuine challenges of the people in ``draws`` while every attack
    (replay, random gaze) passes at most MAX_ATTACK_RATE; if none keeps attacks that low, the one with the fewest
    attacks passing."""

    def score(params: ValidatorParams) -> tuple[bool, float, float]:
        genuine, attacks = [], []
        for person in draws.values():
            for drawn in person.modes.values():
                if not isinstance(drawn, str):
                    genuine.append(tally(judge(drawn.genuine, params)).value)
                    attacks.append(tally(judge(drawn.replay, params)).value)
            attacks.append(tally(judge(person.random_gaze, params)).value)
        worst_attack = max((a for a in attacks if a == a), default=0.0)  # nan (no replay possible) ignored
        return worst_attack <= MAX_ATTACK_RATE, float(np.mean(genuine)) if genuine else 0.0, -worst_attack

    candidates = params_grid(base)
    scores = [score(p) for p in progress(candidates, f"choosing on {', '.join(draws)}")]
    safe = [(s[1], i) for i, s in enumerate(scores) if s[0]]
    best = max(safe)[1] if safe else max(range(len(scores)), key=lambda i: (scores[i][2], scores[i][1]))
    return candidates[best]


def draw_photos(
    draws: PersonDraws, videos: list[Path], landmarker: Path, duration: float, photo_trials: int, rng: random.Random,
    interval: float, net: GazeNet | None = None, net_interval: float = 0.0, scale: float = 1.0,
) -> None:  # fmt: skip
    """Photo attacks, tracked frame by frame at the scorer's frame interval (the slow part: ~1.5 s each)."""
    stills = [shrunk(f.rgb, scale) for video in videos for f in read_frames(video, max_frames=1000, interval=1.0)]
    for _ in range(photo_trials):
        still = rng.choice(stills)
        for moving, bucket in ((False, draws.photo_still), (True, draws.photo_moved)):
            with GazeTracker(landmarker, net) as tracker:
                frames = photo_attack(still, tracker, 3 * duration, moving, rng, interval, net_interval)
            bucket.append((frames, Challenge(rng.choice(SEQUENCES), duration)))


def median_eye_width(recordings: list[Recording]) -> float:
    """Pixels, over the frames where a face was tracked: how the person's eyes compare with the try-again limit."""
    widths = [f.eye_width for r in recordings for f in r.frames if f.eye_width > 0]
    return float(np.median(widths)) if widths else 0.0


def shown_params(params: ValidatorParams) -> dict[str, float]:
    return {name: float(getattr(params, name)) for name in GRID}


def run(
    people: dict[str, list[Path]],
    landmarker: Path,
    cache_dir: Path,
    params: ValidatorParams,
    duration: float = 3.0,
    trials: int = 400,
    photo_trials: int = 20,
    seed: int = 11,
    interval: float = 0.0,
    screen: tuple[int, int] = (GAME_WIDTH, GAME_HEIGHT),
    leave_one_out: bool = True,
    vary_lengths: bool = True,
    net: GazeNet | None = None,
    net_interval: float = 0.0,
    calibration_trials: int = 200,
    scale: float = 1.0,
) -> GazeResult:
    """``people`` is what ``group_by_person`` found; ``interval`` keeps frames at least that many seconds apart, as
    the scorer does; ``scale`` shrinks every frame before tracking (faces farther away). Each person is judged with
    the shipped ``params`` and (``leave_one_out``, with two people or more) with parameters chosen on everyone else,
    on the same challenges. With ``calibration_trials``, a per-person calibration is measured beside them (``bench
    gaze-calibration``)."""
    started = time.perf_counter()
    recordings = load_recordings(people, landmarker, cache_dir, screen, interval, net, net_interval, scale)
    # With drawn lengths, windows are cut at the longest a window can be, and each challenge trims them to its own.
    by_person = pools(recordings, duration * max(LENGTH_FACTORS) if vary_lengths else duration)

    def drawn_for(person: str, count: int) -> PersonDraws:
        mine = [r for r in recordings if r.person == person]
        return draw_challenges(mine, by_person.get(person, {}), duration, count, random.Random(seed), vary_lengths)

    selection = {person: drawn_for(person, SELECTION_TRIALS) for person in people} if leave_one_out else {}
    results: dict[str, object] = {
        "area_duration": duration,
        "drawn_lengths": vary_lengths,
        "interval": interval,
        "scale": scale,
        "sessions": {person: [session_stamp(v) for v in videos] for person, videos in people.items()},
        "eye_width": {},
        "modes": MODES,
        "grid": GRID,
        "people": {},
    }
    for person, videos in people.items():
        rng = random.Random(seed)
        mine = [r for r in recordings if r.person == person]
        results["eye_width"][person] = median_eye_width(mine)  # type: ignore[index]
        draws = draw_challenges(mine, by_person.get(person, {}), duration, trials, rng, vary_lengths)
        draw_photos(draws, videos, landmarker, duration, photo_trials, rng, interval, net, net_interval, scale)
        if vary_lengths:  # with fixed lengths a retimed replay is the genuine challenge itself
            draw_retimed(draws, duration, random.Random(seed + 1))
        figures = {"shipped": rule_figures(draws, params, shipped_rule_provenance(videos))}
        others = {p: d for p, d in selection.items() if p != person}
        if others:
            figures["held-out"] = rule_figures(draws, choose_params(others, params), ", ".join(others))
        results["people"][person] = PersonFigures(  # type: ignore[index]
            rules=figures, trials=trials, photo_trials=photo_trials
        )
    if calibration_trials:
        from edge.bench import gaze_calibration  # it builds on this module

        results["calibration"] = gaze_calibration.run(recordings, params, duration, calibration_trials)
    results["seconds"] = time.perf_counter() - started
    return GazeResult.model_validate(results)
