"""Passive anti-spoofing (MiniFASNet ensemble) on real live and spoof photographs."""

import numpy as np
import pytest

from edge.liveness.presentation import TEXTURE, PresentationParams, count_blinks, judge, planar_ratio
from edge.vision.antispoof import CROP_CLAMPED, FACE_AT_BORDER, MiniFasNetEnsemble, context_crop
from tests.conftest import read_bgr

SILENT_FACE = "Silent-Face-Anti-Spoofing/images/sample"


@pytest.fixture(scope="module")
def spoof_dir(data_dir):
    return data_dir / "spoof"


def first_face(engine, image):
    faces = engine.detector.detect(image)
    assert faces, "the detector found no face"
    return faces[0]


@pytest.mark.parametrize(
    ("path", "live"),
    [
        (f"{SILENT_FACE}/image_T1.jpg", True),
        (f"{SILENT_FACE}/image_F1.jpg", False),  # printed photo
        (f"{SILENT_FACE}/image_F2.jpg", False),  # tablet replay
        ("getchui_sample-apps/images/images/near_shot_real_person.jpg", True),
        ("getchui_sample-apps/images/images/near_shot_fake_person.jpg", False),  # phone replay
        ("getchui_sample-apps/images/images/spoof.jpg", False),  # monitor replay
    ],
)
def test_real_and_spoof_photos(engine, spoof_dir, path, live):
    image = read_bgr(spoof_dir / path)
    result = engine.pad.score(image, first_face(engine, image))
    assert result.is_live is live, result.to_dict()
    assert set(result.per_model) == {"minifasnet_v2", "minifasnet_v1se"}


def test_crop_is_the_box_enlarged_around_its_centre():
    image = np.zeros((1000, 1000, 3), np.uint8)
    image[450:550, 450:550] = 255  # the "face"
    crop, used = context_crop(image, (450, 450, 100, 100), 2.7)
    assert used == 2.7 and crop.shape == (80, 80, 3)
    bright = crop.mean(axis=2) > 127
    assert 0.1 < bright.mean() < 0.2  # (100 / 270)² ≈ 0.137 of the crop is the face


def test_a_tight_image_and_a_face_at_the_border_are_named(engine, spoof_dir):
    image = read_bgr(spoof_dir / f"{SILENT_FACE}/image_T1.jpg")
    face = first_face(engine, image)
    x, y, w, h = map(int, face.box)
    tight = image[max(0, y - h // 10) : y + h + h // 10, max(0, x - w // 10) : x + w + w // 10]
    assert CROP_CLAMPED in engine.pad.score(tight, first_face(engine, tight)).reasons
    at_edge = image[:, x + w // 8 :]  # the left of the face is cut off by the frame
    assert FACE_AT_BORDER in engine.pad.score(at_edge, first_face(engine, at_edge)).reasons
    assert engine.pad.score(image, face).reasons == []


def test_missing_anti_spoofing_model_names_the_fetch_command(tmp_path):
    from models import ModelMissing

    with pytest.raises(ModelMissing, match=r"facematch models fetch minifasnet_v2"):
        MiniFasNetEnsemble(tmp_path, ["CPUExecutionProvider"])


def test_video_verdict_aggregates_texture_and_counts_blinks():
    assert judge([0.9, 0.8, 0.95], [], [0.0, 0.9, 0.0, 0.0, 0.8, 0.1]).passed
    verdict = judge([0.1, 0.2, 0.05], [], [])
    assert not verdict.passed and verdict.reasons == [TEXTURE]
    assert verdict.to_dict()["reasons"][0]["code"] == TEXTURE
    assert judge([0.1], [], []).passed  # a single sampled frame is not enough to refuse
    assert count_blinks([0.0, 0.9, 0.9, 0.1, 0.7, 0.0]) == 2


def test_planar_ratio_of_a_flat_and_a_rigid_3d_motion():
    rng = np.random.default_rng(0)
    # 478 points on a curved "face" (depth varies), seen while turning (3D) and while a photo of it tilts (planar).
    xy = rng.uniform(-50, 50, (478, 2)).astype(np.float32)
    depth = 0.02 * (xy**2).sum(axis=1)

    def turn(angle):
        x = xy[:, 0] * np.cos(angle) + depth * np.sin(angle)
        return np.stack([x + 200, xy[:, 1] + 200], axis=1).astype(np.float32)

    def tilt(angle):
        x, y = xy[:, 0], xy[:, 1]
        z = 400 + x * np.sin(angle)  # the flat photo tilts: perspective
        return np.stack([400 * x * np.cos(angle) / z + 200, 400 * y / z + 200], axis=1).astype(np.float32)

    params = PresentationParams(min_off_similarity=0.001)
    real = planar_ratio([turn(a) for a in (0.0, 0.25, 0.5)], params)
    flat = planar_ratio([tilt(a) for a in (0.0, 0.25, 0.5)], params)
    assert real is not None and flat is not None and flat < 0.1 < real
    assert planar_ratio([turn(0.0), turn(0.0)], PresentationParams()) is None  # no motion: no opinion


def test_match_reports_per_image_liveness(engine, faces_dir):
    image = read_bgr(faces_dir / "face_recognition/examples/obama.jpg")
    analysis = engine.analyze(image, antispoof=True)
    assert analysis.liveness is not None and analysis.to_dict()["liveness"]["live_probability"] >= 0
    assert engine.analyze(image).liveness is None
