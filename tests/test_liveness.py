"""Challenge generation, the gaze validator on synthetic features, video decoding, and scoring real recordings."""

import itertools
import subprocess
from collections import Counter
from dataclasses import replace

import cv2
import numpy as np
import pytest

from edge.liveness import challenge as challenge_module
from edge.liveness import validator as v
from edge.liveness.challenge import SEQUENCES, Challenge, cell_position, generate_sequence
from edge.vision.gaze import GazeFrame
from edge.vision.video import VideoError, read_frames
from tests.conftest import PARAMS

# ---------------------------------------------------------------------------------------------------- generation


def test_generated_sequences_follow_the_design():
    draws = [tuple(generate_sequence()) for _ in range(3600)]
    for sequence in draws:
        assert len(sequence) == 3 and all(1 <= c <= 6 for c in sequence)
        assert all(a != b for a, b in itertools.pairwise(sequence))
        assert sorted(cell_position(c)[1] for c in sequence) == [0, 1, 2]  # every column once
        assert len({cell_position(c)[0] for c in sequence}) == 2  # both rows
    counts = Counter(draws)
    assert set(counts) == set(SEQUENCES) and len(SEQUENCES) == 36
    expected = len(draws) / len(SEQUENCES)
    assert all(expected / 2 < n < expected * 2 for n in counts.values()), counts


def test_sequences_come_from_the_secrets_module(monkeypatch):
    calls = []
    monkeypatch.setattr(challenge_module.secrets, "randbelow", lambda n: calls.append(n) or 0)
    assert tuple(generate_sequence()) == SEQUENCES[0] and calls == [36]


def test_challenge_refuses_bad_sequences():
    with pytest.raises(ValueError):
        Challenge((1, 1, 2), 3.0)
    with pytest.raises(ValueError):
        Challenge((0, 2, 3), 3.0)
    windows = Challenge((3, 1, 5), 2.0).windows()
    assert [(w.cell, w.start, w.end) for w in windows] == [(3, 0.0, 2.0), (1, 2.0, 4.0), (5, 4.0, 6.0)]
    assert (windows[2].row, windows[2].column) == (1, 1)


# ----------------------------------------------------------------------------------------------------- validator

SEQUENCE = (4, 2, 3)  # columns 0, 1, 2; rows 1, 0, 0
IRIS_BY_COLUMN = {0: 0.60, 1: 0.50, 2: 0.40}  # the iris moves image-left as the gaze moves screen-right
IRIS_Y_BY_ROW = {0: -0.05, 1: -0.02}


def synthetic(sequence=SEQUENCE, duration=3.0, fps=10, noise=0.01, seed=0, **overrides):
    overrides = {"eye_width": 20.0, "brightness": 120.0, **overrides}  # a face like the EyeGaze recordings'
    rng = np.random.default_rng(seed)
    frames = []
    for k, cell in enumerate(sequence):
        row, column = cell_position(cell)
        for i in range(int(duration * fps)):
            t = k * duration + i / fps
            frames.append(
                GazeFrame(
                    t=t, faces=1, face=True,
                    iris_x=IRIS_BY_COLUMN[column] + rng.normal(0, noise),
                    iris_y=IRIS_Y_BY_ROW[row] + rng.normal(0, noise / 4),
                    **overrides,
                )
            )  # fmt: skip
    return frames


def test_a_genuine_gaze_passes():
    verdict = v.validate(synthetic(), Challenge(SEQUENCE, 3.0), PARAMS)
    assert verdict.passed and verdict.reasons == [] and verdict.overall_accuracy > 0.95
    assert [a.cell for a in verdict.areas] == list(SEQUENCE) and all(a.passed for a in verdict.areas)
    assert all(a.frames == 30 and a.frames_used == 24 for a in verdict.areas)  # 0.6 s settle at 10 fps
    body = verdict.to_dict()
    assert body["result"] == "pass" and body["sequence_results"][0]["area"] == 4


def test_a_still_face_fails_as_not_moving():
    frames = [replace(f, iris_x=0.5, iris_y=-0.03) for f in synthetic()]
    verdict = v.validate(frames, Challenge(SEQUENCE, 3.0), PARAMS)
    # One reason, not "did not move" together with "moved the wrong way" (they used to come together).
    assert not verdict.passed and verdict.reasons == [v.NO_HORIZONTAL_MOVEMENT]
    # No area is shown as passed and no accuracy is claimed when the gaze did not follow.
    assert verdict.overall_accuracy == 0.0 and not any(a.passed or a.accuracy for a in verdict.areas)


def test_a_replay_of_another_sequence_shows_no_area_passed():
    verdict = v.validate(synthetic(sequence=(6, 2, 1)), Challenge(SEQUENCE, 3.0), PARAMS)
    # The per-frame step would find each window "on its own level" (98 % and every area ticked): it must not run.
    assert not verdict.passed and verdict.overall_accuracy == 0.0 and not any(a.passed for a in verdict.areas)


def test_every_reason_says_what_to_do_next():
    from edge.liveness import presentation

    for table in (v.MESSAGES, presentation.MESSAGES):
        for code, (message, hint) in table.items():
            assert message and hint and hint != message, code


def test_gaze_following_another_column_order_fails():
    verdict = v.validate(synthetic(sequence=(6, 2, 1)), Challenge(SEQUENCE, 3.0), PARAMS)
    assert not verdict.passed and v.WRONG_DIRECTION in verdict.reasons


def test_a_replay_that_moves_the_right_way_at_both_switches_still_fails():
    # Shown columns 1, 0, 2 for a challenge of columns 2, 0, 1: both switches go the right way, the order does not.
    verdict = v.validate(synthetic(sequence=(2, 1, 3)), Challenge((3, 1, 2), 3.0), PARAMS)
    assert not verdict.passed and v.WRONG_DIRECTION in verdict.reasons


def test_every_lower_row_window_must_sit_below_every_upper_row_one():
    # Challenge rows 1, 1, 0; the second window is looked at above the upper row. The rows' means are still ordered
    # (the first window is well below), but that window is not below the third.
    frames = [replace(f, iris_y=-0.06) if 3.0 <= f.t < 6.0 else f for f in synthetic(sequence=(4, 5, 3))]
    verdict = v.validate(frames, Challenge((4, 5, 3), 3.0), PARAMS)
    assert not verdict.passed and verdict.reasons == [v.WRONG_ROW]


def test_right_columns_wrong_rows_fail():
    verdict = v.validate(synthetic(sequence=(1, 5, 6)), Challenge(SEQUENCE, 3.0), PARAMS)
    assert not verdict.passed and verdict.reasons == [v.WRONG_ROW]


def with_net_rows(frames, sequence, every=2):
    """The gaze network's reading on every ``every``-th frame: lower row +1, upper row -1 (iris rows untouched)."""
    rows = {k: cell_position(cell)[0] for k, cell in enumerate(sequence)}
    return [replace(f, net_y=2.0 * rows[int(f.t // 3.0)] - 1) if i % every == 0 else f for i, f in enumerate(frames)]


def test_the_rows_can_be_read_from_the_gaze_network():
    net_rows = replace(PARAMS, row_source="net")
    # The iris says upper/lower the wrong way round; the network says it right: only the network's reading counts.
    frames = with_net_rows(synthetic(sequence=(1, 5, 6)), SEQUENCE)
    assert v.validate(frames, Challenge(SEQUENCE, 3.0), net_rows).passed
    assert v.validate(frames, Challenge(SEQUENCE, 3.0), PARAMS).reasons == [v.WRONG_ROW]
    # The network's rows of another sequence fail as the iris's do.
    frames = with_net_rows(synthetic(), (1, 5, 6))
    assert v.validate(frames, Challenge(SEQUENCE, 3.0), net_rows).reasons == [v.WRONG_ROW]
    # A window with too few network readings: every window falls back to the iris (levels of two sources never mix).
    sparse = with_net_rows(synthetic(), SEQUENCE, every=15)
    frames = [replace(f, net_y=-f.net_y) if f.net_y is not None else f for f in sparse]  # net rows inverted
    assert v.validate(frames, Challenge(SEQUENCE, 3.0), net_rows).passed


def test_the_gaze_networks_crops_follow_the_face():
    from edge.vision.gaze_net import LEFT_CORNERS, LIPS, RIGHT_CORNERS, crops

    rng = np.random.default_rng(1)
    points = rng.uniform([200, 150], [400, 390], size=(478, 2))  # a face box of 200 x 240 px in a 640 x 480 image
    points[list(LEFT_CORNERS)] = [[250, 230], [290, 232]]
    points[list(RIGHT_CORNERS)] = [[320, 232], [360, 230]]
    face, left, right = crops(points, 640, 480)
    x, _, w, h = face
    assert abs(w - h) <= 2 and x <= 250 and x + w >= 360  # squared around the landmarks
    for (ex, ey, ew, eh), (outer, inner) in ((left, LEFT_CORNERS), (right, RIGHT_CORNERS)):
        assert ex < points[outer, 0] and ex + ew > points[inner, 0] and ey < 231 < ey + eh
        assert abs(eh - 0.75 * ew) <= 2
    points[LIPS, 1] = 500  # the mouth below the image: the network was not made for such faces
    assert crops(points, 640, 480) is None


def test_gaze_that_keeps_leaving_the_area_fails_on_accuracy():
    # In each window the eyes spend the last 40 % of the time on the neighbouring column: the levels still order
    # correctly, but too few frames are on the lit area.
    frames = []
    for f in synthetic():
        k = int(f.t // 3.0)
        column = cell_position(SEQUENCE[k])[1]
        if f.t - 3.0 * k > 1.8:
            f = replace(f, iris_x=IRIS_BY_COLUMN[1 if column != 1 else 2])
        frames.append(f)
    verdict = v.validate(frames, Challenge(SEQUENCE, 3.0), PARAMS)
    assert not verdict.passed and verdict.reasons == [v.LOW_ACCURACY] and verdict.overall_accuracy < 0.8


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(face=False, faces=0), v.NO_FACE),
        (dict(faces=2, face=False), v.MULTIPLE_FACES),
        (dict(blink=0.9), v.EYES_CLOSED),
    ],
)
def test_tracking_failures_are_named(change, reason):
    verdict = v.validate([replace(f, **change) for f in synthetic()], Challenge(SEQUENCE, 3.0), PARAMS)
    assert not verdict.passed and reason in verdict.reasons and verdict.overall_accuracy == 0.0


def test_too_few_frames_fail():
    frames = synthetic(fps=2)
    verdict = v.validate(frames, Challenge(SEQUENCE, 3.0), PARAMS)
    assert not verdict.passed and verdict.reasons == [v.NOT_ENOUGH_FRAMES]
    assert verdict.outcome == "try_again" and verdict.to_dict()["result"] == "fail"  # the seed's field is unchanged


@pytest.mark.parametrize(
    ("change", "reason"),
    [(dict(eye_width=9.0), v.FACE_TOO_SMALL), (dict(brightness=25.0), v.TOO_DARK), (dict(fps=2), v.NOT_ENOUGH_FRAMES)],
)
def test_weak_evidence_asks_to_try_again_and_never_passes(change, reason):
    # The gaze follows perfectly: it is the picture that cannot be read.
    verdict = v.validate(synthetic(**change), Challenge(SEQUENCE, 3.0), PARAMS)
    assert not verdict.passed and verdict.reasons == [reason] and verdict.outcome == "try_again"
    assert v.MESSAGES[reason][1]  # says what to change


def test_evidence_against_the_person_is_a_fail_even_with_weak_evidence():
    frames = [replace(f, faces=2, face=False) if i % 3 else f for i, f in enumerate(synthetic(brightness=25.0))]
    verdict = v.validate(frames, Challenge(SEQUENCE, 3.0), PARAMS)
    assert v.MULTIPLE_FACES in verdict.reasons and verdict.outcome == "fail"
    wrong_way = v.validate(synthetic(sequence=(6, 2, 1)), Challenge(SEQUENCE, 3.0), PARAMS)
    assert wrong_way.outcome == "fail"


def test_unmeasured_brightness_is_not_judged():
    verdict = v.validate(synthetic(brightness=None), Challenge(SEQUENCE, 3.0), PARAMS)
    assert verdict.passed


def test_the_threshold_is_the_configured_one():
    frames = synthetic(noise=0.06, seed=5)
    verdict = v.validate(frames, Challenge(SEQUENCE, 3.0), PARAMS)
    strict = v.validate(frames, Challenge(SEQUENCE, 3.0), replace(PARAMS, accuracy_threshold=0.999))
    assert verdict.overall_accuracy == strict.overall_accuracy < 0.999
    assert not strict.passed and v.LOW_ACCURACY in strict.reasons


# ------------------------------------------------------------------------------------------------------ decoding


def ffmpeg_video(path, codec, seconds=2, rate=30):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={rate}", "-t", str(seconds),
         "-pix_fmt", "yuv420p", "-c:v", codec, str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("name", "codec"),
    [("vp8.webm", "libvpx"), ("vp9.webm", "libvpx-vp9"), ("h264.mp4", "libx264"), ("h264.mkv", "libx264"),
     ("mjpeg.avi", "mjpeg")],
)  # fmt: skip
def test_decodes_what_browsers_and_cameras_record(tmp_path, name, codec):
    frames = list(read_frames(ffmpeg_video(tmp_path / name, codec)))
    assert 55 <= len(frames) <= 61
    times = [f.t for f in frames]
    assert times[0] == 0 and all(b > a for a, b in itertools.pairwise(times))
    assert times[-1] == pytest.approx(2.0 - 1 / 30, abs=0.05)
    assert frames[0].rgb.shape == (240, 320, 3)


def test_variable_frame_rate_keeps_real_timestamps(tmp_path):
    # 10 fps for 1 s then 30 fps for 1 s: a frame count would misplace every later frame.
    path = tmp_path / "vfr.webm"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=30", "-t", "2",
         "-vf", "select='gte(t,1)+not(mod(n,3))'", "-fps_mode", "vfr", "-c:v", "libvpx", str(path)],
        check=True,
    )  # fmt: skip
    frames = list(read_frames(path))
    assert 38 <= len(frames) <= 42
    assert frames[-1].t == pytest.approx(2.0 - 1 / 30, abs=0.06)


def test_stride_and_caps_bound_the_work(tmp_path):
    path = ffmpeg_video(tmp_path / "a.webm", "libvpx", seconds=3)
    assert len(list(read_frames(path, interval=0.1))) == 30
    assert len(list(read_frames(path, max_seconds=1.0))) == 31
    assert len(list(read_frames(path, max_frames=10))) == 10
    big = ffmpeg_video(tmp_path / "big.mp4", "libx264", seconds=1)
    assert max(next(iter(read_frames(big, max_side=160))).rgb.shape[:2]) == 160


@pytest.mark.parametrize("content", [b"", b"certainly not a video", None])
def test_broken_videos_are_refused(tmp_path, content):
    path = tmp_path / "broken.webm"
    if content is None:  # a real file cut short after its header
        whole = ffmpeg_video(tmp_path / "whole.webm", "libvpx").read_bytes()
        content = whole[:300]
    path.write_bytes(content)
    with pytest.raises(VideoError):
        list(read_frames(path))


# ----------------------------------------------------------------------------------------- real recordings


@pytest.fixture(scope="module")
def landmarker(model_settings):
    from models import model_path

    return model_path(model_settings.models.dir, "face_landmarker")


def test_scores_a_real_recording(data_dir, landmarker):
    from edge.inference.liveness import score_video

    video = data_dir / "gaze/eyegaze/both/game_video_1738773752.mp4"
    result = score_video(video, [1, 2, 3], 3.0, landmarker, PARAMS).model_dump()
    assert result["result"] in ("pass", "fail")
    assert len(result["sequence_results"]) == 3 and 80 <= result["frames_processed"] <= 110
    assert all(a["frames_used"] > 10 for a in result["sequence_results"])


def test_the_gaze_bench_can_track_a_recording_shrunk_as_if_the_person_stood_farther_away(
    data_dir, landmarker, tmp_path, monkeypatch
):
    from edge.bench import gaze as bench

    video = data_dir / "gaze/eyegaze/both/game_video_1738773752.mp4"
    few = list(read_frames(video, max_seconds=1.0, interval=0.25))
    monkeypatch.setattr(bench, "read_frames", lambda *a, **k: iter(few))
    full = bench.load_recording(video, landmarker, tmp_path)
    half = bench.load_recording(video, landmarker, tmp_path, scale=0.5)
    assert bench.shrunk(few[0].rgb, 0.5).shape == (240, 320, 3) and bench.shrunk(few[0].rgb, 1.0) is few[0].rgb
    width, shrunk_width = (float(np.median([f.eye_width for f in frames if f.face])) for frames in (full, half))
    assert 0.4 < shrunk_width / width < 0.6  # the eyes are half as wide, not merely resampled
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{video.stem}-{video.stat().st_size}-v2-x0.5.json",
        f"{video.stem}-{video.stat().st_size}-v2.json",
    ]  # each size cached apart: a shrunk run never reads the full-size features
    monkeypatch.setattr(bench, "read_frames", None)  # a second load is read from the cache, not tracked again
    assert bench.load_recording(video, landmarker, tmp_path, scale=0.5) == [type(f)(**f.to_dict()) for f in half]
    assert bench.median_eye_width([bench.Recording("A", "x", half, [])]) == pytest.approx(shrunk_width)


def test_the_gaze_network_tells_the_rows_of_a_real_recording_apart(data_dir, landmarker, gaze_nets):
    import csv

    from edge.vision.gaze import GazeTracker

    video = data_dir / "gaze/eyegaze/vertical/game_video_1738773281.mp4"
    targets = list(csv.DictReader(video.with_name("game_coordinates_1738773281.csv").open()))
    by_row: dict[int, list[float]] = {0: [], 1: []}
    with gaze_nets.lend() as net, GazeTracker(landmarker, net) as tracker:
        for frame in read_frames(video, max_seconds=30, interval=0.2):
            features = tracker.track(frame.rgb, frame.t, with_net=True)
            lagged = int((frame.t - 0.4) * 30)  # the eyes follow the target ~0.4 s late; one coordinate row a frame
            if features.net_y is not None and 0 <= lagged < len(targets):
                by_row[int(float(targets[lagged]["GameY"]) >= 670)].append(features.net_y)
    assert len(by_row[0]) > 20 and len(by_row[1]) > 20
    upper, lower = np.array(by_row[0]), np.array(by_row[1])
    d_prime = (lower.mean() - upper.mean()) / np.sqrt((lower.var() + upper.var()) / 2)
    assert d_prime > 1.0, d_prime  # lower on the screen reads lower (the iris alone: ~1 on these recordings)


def test_a_challenge_scored_with_the_gaze_network_reads_its_rows_from_it(challenge_video, landmarker, gaze_nets):
    from edge.inference.liveness import track_video

    tracked = track_video(challenge_video, landmarker, 9.0, nets=gaze_nets, net_interval=0.2)
    netted = [f.t for f in tracked.frames if f.net_y is not None]
    assert 35 <= len(netted) <= 46 and min(np.diff(netted)) >= 0.15  # every 0.2 s, one lane or the other
    plain = track_video(challenge_video, landmarker, 9.0)
    assert all(f.net_y is None for f in plain.frames) and len(plain.frames) == len(tracked.frames)
    # As the daemon scores it when liveness.gaze_net is on: the rows from the iris and the network added.
    from edge.inference.liveness import score_video

    both = replace(PARAMS, row_source="both")
    result = score_video(challenge_video, [1, 5, 6], 3.0, landmarker, both, nets=gaze_nets, net_interval=0.2)
    assert result.result in ("pass", "fail") and len(result.sequence_results) == 3


def test_the_gaze_network_switched_on_without_its_weights_stops_the_daemon_with_the_fix(tmp_path):
    from edge.config import load_settings
    from edge.inference.liveness import gaze_nets
    from models import ModelMissing

    settings = load_settings(environ={"FACEMATCH_LIVENESS__GAZE_NET": "true", "FACEMATCH_MODELS__DIR": str(tmp_path)})
    with pytest.raises(ModelMissing, match="facematch models fetch gaze_net"):
        gaze_nets(settings)
    assert gaze_nets(load_settings(environ={})) is None  # off by default: nothing loaded


def test_a_photo_held_in_front_of_the_camera_fails(data_dir, landmarker, tmp_path):
    from edge.inference.liveness import score_video

    source = data_dir / "gaze/eyegaze/horizontal/game_video_1738772966.mp4"
    still = next(f.rgb for i, f in enumerate(read_frames(source)) if i == 200)
    path = tmp_path / "photo.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (still.shape[1], still.shape[0]))
    rng = np.random.default_rng(0)
    for i in range(9 * 30):
        matrix = cv2.getRotationMatrix2D((320, 240), 3 * np.sin(i / 20), 1.0)
        matrix[:, 2] += (15 * np.sin(i / 15) + rng.normal(0, 0.5), 10 * np.cos(i / 25))
        writer.write(cv2.cvtColor(cv2.warpAffine(still, matrix, (640, 480)), cv2.COLOR_RGB2BGR))
    writer.release()
    result = score_video(path, [4, 2, 3], 3.0, landmarker, PARAMS).model_dump()
    assert result["result"] == "fail"
    assert {r["code"] for r in result["reasons"]} & {v.NO_HORIZONTAL_MOVEMENT, v.WRONG_DIRECTION, v.LOW_ACCURACY}


# ----------------------------------------------------------------------------------------- the gaze benchmark


def test_bench_finds_sessions_wherever_they_are(tmp_path):
    from edge.bench.gaze import find_sessions

    for folder, stamp, with_csv in (("x/deep", "200", True), ("y", "100", True), ("z", "300", False)):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / f"game_video_{stamp}.mp4").touch()
        if with_csv:
            (tmp_path / folder / f"game_coordinates_{stamp}.csv").touch()
    found = find_sessions(tmp_path)
    assert [(v.name, c.name) for v, c in found] == [
        ("game_video_100.mp4", "game_coordinates_100.csv"),
        ("game_video_200.mp4", "game_coordinates_200.csv"),
    ]  # the session without target coordinates is left out


def test_bench_groups_the_recordings_by_person_like_the_data_readme(data_dir, engine):
    from edge.bench.gaze import find_sessions, group_by_person

    people = group_by_person([video for video, _ in find_sessions(data_dir / "gaze")], engine)
    stamps = {name: [v.stem.removeprefix("game_video_") for v in videos] for name, videos in people.items()}
    assert stamps == {"A": ["1738772966", "1738773281", "1738773752"], "B": ["1738774660", "1738774720"]}


def test_the_gaze_bench_names_the_development_people_and_says_whose_figures_are_held_out(tmp_path):
    from edge.bench.gaze import name_people, shipped_rule_provenance

    stamps = ("18", "19", "1738773752", "1738774720")  # two newcomers, then a session each of A and B
    newcomer, other, a, b = ([tmp_path / f"game_video_{stamp}.mp4"] for stamp in stamps)
    # Someone else's recordings found first still leave A and B their names (docs/LIVENESS.md's), and never take them.
    assert name_people([newcomer, b, a, other]) == {"C": newcomer, "B": b, "A": a, "D": other}
    assert list(name_people([newcomer])) == ["C"]
    assert "not held out" in shipped_rule_provenance(a) and "not held out" in shipped_rule_provenance(b)
    assert shipped_rule_provenance(newcomer).endswith(": held out")
    # A newcomer's session grouped with B's (the matcher found them to be one person) is B's.
    assert "not held out" in shipped_rule_provenance(newcomer + b)


def test_drawn_window_lengths_make_the_schedule():
    from edge.liveness.challenge import LENGTH_FACTORS, draw_durations

    drawn = {draw_durations(3.0) for _ in range(200)}
    assert len(drawn) > 100  # 9**3 schedules: a recording made in advance rarely fits
    assert all(len(d) == 3 and all(3.0 * 0.8 - 1e-9 <= x <= 3.0 * 1.2 + 1e-9 for x in d) for d in drawn)
    assert len(LENGTH_FACTORS) == 9
    challenge = Challenge((3, 4, 2), 3.0, (2.4, 3.6, 3.15))
    assert [(w.start, w.end) for w in challenge.windows()] == [(0.0, 2.4), (2.4, 6.0), (6.0, 9.15)]
    assert challenge.total_duration == 9.15
    with pytest.raises(ValueError):
        Challenge((3, 4, 2), 3.0, (2.4, 3.6))


def test_a_person_calibration_learns_gain_and_row_gap_and_scales_the_validator():
    from edge.liveness.person import PersonGaze, calibrate, params_for
    from edge.vision.gaze import GazeFrame

    def frames(column: int, row: int) -> list[GazeFrame]:
        return [GazeFrame(t=0.1 * i, faces=1, face=True, iris_x=0.5 - 0.08 * column, iris_y=0.1 + 0.04 * row,
                          lid_y=0.5, eye_width=30.0) for i in range(30)]  # fmt: skip

    learnt = calibrate([(cell, frames((cell - 1) % 3, (cell - 1) // 3)) for cell in range(1, 7)])
    assert learnt.gain == pytest.approx(0.08, abs=1e-6)
    assert learnt.row_gap is not None
    params = PARAMS
    scaled = params_for(learnt, params, gain_share=0.5, row_gap_share=0.3)
    assert scaled.min_gain == pytest.approx(max(0.5 * params.min_gain, 0.04))
    assert params_for(None, params, 0.5, 0.3) is params
    assert params_for(PersonGaze(None, None), params, 0.5, 0.3) == params  # nothing measured: calibration-free
    assert calibrate([(1, frames(0, 0))]) == PersonGaze(None, None)  # one cell tells nothing


def test_anti_spoofing_evidence_is_never_softened_into_try_again():
    from edge.inference.liveness import Tracked, liveness_result
    from edge.liveness.presentation import PresentationVerdict

    weak = v.validate(synthetic(brightness=25.0), Challenge(SEQUENCE, 3.0), PARAMS)
    assert weak.outcome == "try_again"
    cues = dict(frames_scored=9, screen_pattern=1.2, picture_motion=None, planar_ratio=None, blinks=1)
    live = PresentationVerdict(passed=True, live_probability=0.4, **cues)
    spoof = PresentationVerdict(passed=False, live_probability=0.001, reasons=["antispoof_texture"], **cues)
    assert liveness_result(weak, live, Tracked()).outcome == "try_again"
    refused = liveness_result(weak, spoof, Tracked())
    assert refused.outcome == "fail" and refused.result == "fail"


def test_the_gaze_bench_reports_honest_intervals_and_searches_around_the_shipped_rule():
    from edge.bench.gaze import GRID, params_grid, wilson

    low, high = wilson(0, 400)
    assert low == 0.0 and 0.009 < high < 0.010  # 0 of 400 still allows up to ~1 %
    low, high = wilson(388, 400)
    assert low < 0.97 < high
    grid = params_grid(PARAMS)
    assert len(grid) == np.prod([len(values) for values in GRID.values()])
    shipped = {name: getattr(PARAMS, name) for name in GRID}
    assert any(all(getattr(p, n) == value for n, value in shipped.items()) for p in grid)
    assert all(p.accuracy_threshold == PARAMS.accuracy_threshold for p in grid)  # the seed's threshold is not tuned


def test_leave_one_out_chooses_without_the_held_out_person(monkeypatch, tmp_path):
    import edge.bench.gaze as bench

    calls: list[str] = []
    people = {name: [tmp_path / f"game_video_{k}.mp4"] for k, name in enumerate(("A", "B", "C"))}
    one = [(synthetic(), Challenge(SEQUENCE, 3.0))]
    monkeypatch.setattr(bench, "load_recordings", lambda *a, **k: [bench.Recording(p, p, [], []) for p in people])
    monkeypatch.setattr(bench, "pools", lambda *a, **k: {})
    monkeypatch.setattr(bench, "draw_challenges", lambda *a, **k: bench.PersonDraws({}, list(one)))
    monkeypatch.setattr(bench, "draw_photos", lambda *a, **k: None)

    def choose(draws, base):
        calls.append(",".join(draws))
        return base

    monkeypatch.setattr(bench, "choose_params", choose)
    result = bench.run(people, tmp_path / "landmarker", tmp_path, PARAMS, trials=1, photo_trials=0)
    assert calls == ["B,C", "A,C", "A,B"]  # each person's rule is chosen on everyone else
    assert [r.rules["held-out"].chosen_on for r in result.people.values()] == ["B, C", "A, C", "A, B"]
    # The per-person calibration is measured beside (each person here has one session: nothing to test it on).
    assert result.calibration is not None and set(result.calibration.skipped) == {"A", "B", "C"}
    assert "per-person gaze calibration" in result.report()
    assert "leave one person out: parameters chosen on the other people" in result.report()
    # Nothing to hold out with one person, or when asked not to: the report says so instead of naming a grid.
    alone = bench.run({"A": people["A"]}, tmp_path / "landmarker", tmp_path, PARAMS, trials=1, photo_trials=0)
    assert "needs recordings of two people or more" in alone.report()
    skipped = bench.run(people, tmp_path / "lm", tmp_path, PARAMS, trials=1, photo_trials=0, leave_one_out=False)
    assert "not run (--no-leave-one-out)" in skipped.report()
    assert calls == ["B,C", "A,C", "A,B"]  # and no rule was chosen for either


def test_the_gaze_bench_checks_each_genuine_recording_against_new_window_lengths_of_its_sequence():
    import random

    from edge.bench.gaze import GazeResult, ModeDraws, PersonDraws, PersonFigures, draw_retimed, rule_figures

    genuine = [(synthetic(seed=k), Challenge(SEQUENCE, 3.0, (3.0, 3.0, 3.0))) for k in range(20)]
    draws = PersonDraws({"one session": ModeDraws(1, list(genuine), []), "joined sessions": "none covered"}, [])
    draw_retimed(draws, 3.0, random.Random(1))
    retimed = draws.modes["one session"].retimed  # type: ignore[union-attr]
    # The same recordings and sequence; the server's window lengths, drawn anew.
    assert [frames for frames, _ in retimed] == [frames for frames, _ in genuine]
    assert all(c.sequence == SEQUENCE and all(2.4 - 1e-9 <= x <= 3.6 + 1e-9 for x in c.lengths) for _, c in retimed)
    assert len({c.lengths for _, c in retimed}) > 10
    figures = rule_figures(draws, PARAMS, "test")
    one = figures.modes["one session"]
    assert one.genuine.n == 20 and one.retimed is not None and one.retimed.n == 20
    assert figures.modes["joined sessions"].retimed is None
    result = GazeResult(
        area_duration=3.0, interval=0.1, sessions={"C": ["1"]}, modes={}, grid={}, seconds=0.0,
        people={"C": PersonFigures(rules={"shipped": figures}, trials=20, photo_trials=0)},
    )  # fmt: skip
    assert "retimed replay" in result.report() and one.retimed.text() in result.report()


def test_the_gaze_bench_cuts_each_window_to_its_drawn_length():
    import random

    from edge.bench.gaze import drawn_lengths, join

    lengths = drawn_lengths(3.0, random.Random(4))
    assert len(lengths) == 3 and all(2.4 - 1e-9 <= d <= 3.6 + 1e-9 for d in lengths)
    window = [GazeFrame(t=0.1 * i, faces=1, face=True) for i in range(36)]  # 3.6 s: the longest a window can be
    frames = join([window, window, window], 3.0, lengths)
    challenge = Challenge(SEQUENCE, 3.0, lengths)
    for w in challenge.windows():  # every window is filled from its start to its own end, no more
        inside = [f.t for f in frames if w.start <= f.t < w.end]
        assert inside and inside[0] == pytest.approx(w.start) and w.end - inside[-1] <= 0.1 + 1e-9
    assert frames[-1].t < challenge.total_duration
