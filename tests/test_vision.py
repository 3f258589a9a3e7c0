"""The face pipeline on real photographs (../shared/data/faces) and on synthetic damage done to them."""

import io
import itertools

import cv2
import numpy as np
import pytest
from PIL import Image

from edge.vision import quality
from edge.vision.align import ARCFACE_112, align, similarity_transform
from edge.vision.calibration import Calibration, fmr_for_score, score_for_fmr
from edge.vision.decode import ImageError, decode_image
from edge.vision.embed import Embedding, EmbeddingMismatch, cosine
from tests.conftest import read_bgr

INSIGHT = "insightface/cpp-package/inspireface/test_res/data"


@pytest.fixture(scope="module")
def obama(faces_dir):
    return read_bgr(faces_dir / "face_recognition/examples/obama.jpg")


def test_detector_returns_landmarks_in_template_order(engine, obama):
    faces = engine.detector.detect(obama)
    assert len(faces) == 1
    eye_l, eye_r, nose, mouth_l, mouth_r = faces[0].landmarks
    assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


def test_mtcnn_uses_the_same_landmark_order(model_settings, engine, obama):
    from edge.vision.detect import MtcnnDetector

    mtcnn = MtcnnDetector().detect(obama)
    yunet = engine.detector.detect(obama)
    assert len(mtcnn) == 1
    # Same points, same order: each MTCNN landmark lies within a few pixels of YuNet's.
    distance = np.linalg.norm(mtcnn[0].landmarks - yunet[0].landmarks, axis=1)
    assert (distance < 0.15 * yunet[0].eye_distance).all(), distance


def test_alignment_maps_landmarks_onto_the_template():
    rng = np.random.default_rng(0)
    angle, scale, shift = 0.3, 2.5, np.array([40.0, 70.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (ARCFACE_112 @ rotation.T) * scale + shift + rng.normal(0, 0.01, (5, 2))
    matrix = similarity_transform(landmarks.astype(np.float32), ARCFACE_112)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - ARCFACE_112).max() < 0.1
    assert align(np.zeros((300, 300, 3), np.uint8), landmarks.astype(np.float32)).shape == (112, 112, 3)


def test_same_person_matches_and_different_people_do_not(engine, faces_dir):
    photos = faces_dir / "face_recognition/examples"
    obama1 = engine.analyze(read_bgr(photos / "obama.jpg")).embedding
    obama2 = engine.analyze(read_bgr(photos / "obama2.jpg")).embedding
    biden = engine.analyze(read_bgr(photos / "biden.jpg")).embedding
    _, same = engine.compare(obama1, obama2)
    _, different = engine.compare(obama1, biden)
    assert same >= 0.6 > different, (same, different)


def test_lfw_pairs_from_view_1(engine, faces_dir):
    from edge.bench.lfw import read_pairs

    lfw = faces_dir / "lfw_official"
    pairs = [p for p in read_pairs(lfw / "pairsDevTest.txt") if (lfw / "images" / p.a).exists()][::25]
    correct = 0
    for pair in pairs:
        a = engine.analyze(read_bgr(lfw / "images" / pair.a), embed_if_poor=True).embedding
        b = engine.analyze(read_bgr(lfw / "images" / pair.b), embed_if_poor=True).embedding
        correct += (engine.compare(a, b)[1] >= 0.6) == pair.same
    assert correct / len(pairs) >= 0.9, f"{correct}/{len(pairs)}"


def test_quality_passes_a_good_photo(engine, obama):
    report = engine.analyze(obama).quality
    assert report.ok and report.reasons == []


def test_quality_no_face(engine, faces_dir):
    report = engine.analyze(read_bgr(faces_dir / INSIGHT / "crop/no_face.png")).quality
    assert report.reasons == [quality.NO_FACE] and not report.ok


def test_quality_several_faces_warns_and_uses_the_largest(engine, faces_dir):
    analysis = engine.analyze(read_bgr(faces_dir / "face_recognition/examples/two_people.jpg"))
    assert quality.MULTIPLE_FACES in analysis.quality.reasons
    assert analysis.quality.ok and analysis.quality.faces_found == 2
    assert analysis.embedding is not None


def test_quality_face_too_small(engine, obama):
    tiny = cv2.resize(obama, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 127, np.uint8)
    canvas[100 : 100 + tiny.shape[0], 100 : 100 + tiny.shape[1]] = tiny
    report = engine.analyze(canvas).quality
    assert quality.FACE_TOO_SMALL in report.reasons or quality.NO_FACE in report.reasons
    assert not report.ok


def test_quality_too_blurry(engine, obama):
    # Blur that matters at the embedding's scale: relative to the face size (the crop is 112 px wide).
    sigma = engine.detector.detect(obama)[0].eye_distance / 8
    report = engine.analyze(cv2.GaussianBlur(obama, (0, 0), sigma)).quality
    assert quality.TOO_BLURRY in report.reasons and not report.ok


def test_quality_too_dark_and_too_bright(engine, obama):
    dark = engine.analyze((obama * 0.2).astype(np.uint8)).quality
    assert quality.TOO_DARK in dark.reasons
    bright = engine.analyze(cv2.addWeighted(obama, 0.3, np.full_like(obama, 255), 0.7, 0)).quality
    assert quality.TOO_BRIGHT in bright.reasons


@pytest.mark.parametrize("name", ["left_face.jpeg", "right_face.png"])
def test_quality_pose_not_frontal(engine, faces_dir, name):
    report = engine.analyze(read_bgr(faces_dir / INSIGHT / "pose" / name)).quality
    assert quality.POSE_NOT_FRONTAL in report.reasons and not report.ok


def test_frontal_pose_photo_passes(engine, faces_dir):
    assert engine.analyze(read_bgr(faces_dir / INSIGHT / "pose/rise_face.jpeg")).quality.ok


def jpeg(pixels: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **save)
    return buffer.getvalue()


def test_decode_applies_exif_orientation():
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    decoded = decode_image(jpeg(pixels, exif=exif), 1024)
    assert decoded.shape[:2] == (80, 40)
    assert decoded[:40].mean() > 200 and decoded[40:].mean() < 50  # the white half is now on top


def test_decode_downscales_to_the_cap():
    decoded = decode_image(jpeg(np.zeros((600, 1200, 3), np.uint8)), 300)
    assert decoded.shape[:2] == (150, 300)


def test_decode_refuses_decompression_bombs():
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, "PNG")  # 144 Mpx of zeros in ~140 KB
    with pytest.raises(ImageError) as info:
        decode_image(buffer.getvalue(), 1024)
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize("data", [b"", b"not an image at all", jpeg(np.zeros((50, 50, 3), np.uint8))[:200]])
def test_decode_refuses_garbage_and_truncated_files(data):
    with pytest.raises(ImageError) as info:
        decode_image(data, 1024)
    assert info.value.code in ("empty_image", "invalid_image")


def test_embeddings_of_different_models_are_never_compared():
    a = Embedding("sface", np.ones(4, np.float32) / 2)
    b = Embedding("facenet", np.ones(4, np.float32) / 2)
    with pytest.raises(EmbeddingMismatch):
        cosine(a, b)


def test_calibration_maps_fmr_decades_onto_scores(engine):
    assert score_for_fmr(1e-3) == pytest.approx(0.6) and fmr_for_score(0.6) == pytest.approx(1e-3)
    cal = engine.calibration
    grid = np.linspace(-1, 1, 201)
    scores = [cal.score(c) for c in grid]
    assert all(b >= a for a, b in itertools.pairwise(scores)) and scores[0] == 0 and scores[-1] == 1
    assert cal.meta["fmr_at_0_6_measured"] == pytest.approx(1e-3, rel=0.2)
    assert cal.score(cal.cosine_for(0.6)) == pytest.approx(0.6, abs=1e-3)


def test_calibration_fit_on_synthetic_scores():
    rng = np.random.default_rng(1)
    impostor = rng.normal(0.0, 0.1, 200_000)
    cal = Calibration.fit("toy", impostor, rng.normal(0.7, 0.1, 1000), {})
    # For a normal(0, 0.1) impostor distribution FMR 1e-3 is at 3.09 sigma.
    assert cal.cosine_for(0.6) == pytest.approx(0.309, abs=0.01)


@pytest.mark.parametrize(
    ("embedder", "models", "model_id"),
    [
        ("dlib", ["dlib_resnet", "dlib_shape5"], "dlib-resnet-v1"),
        ("facenet", ["facenet"], "facenet-msceleb-flip"),
        ("mbf", ["mbf"], "mbf-w600k-flip"),
    ],
)
def test_other_embedders_are_selectable_and_calibrated(model_settings, faces_dir, tmp_path, embedder, models, model_id):
    if embedder == "dlib":
        pytest.importorskip("dlib", reason="dlib-bin is not installed (install.sh --dev installs it)")
    from edge.vision.engine import FaceEngine
    from models.fetch import fetch_one, select

    for spec in select(models, everything=False):
        fetch_one(spec, model_settings, tmp_path, say=lambda _: None)
    settings = model_settings.model_copy(deep=True)
    settings.matching.embedder = embedder
    other = FaceEngine(settings)  # FaceNet: converted from Keras to ONNX on first use
    photos = faces_dir / "face_recognition/examples"
    obama1 = other.analyze(read_bgr(photos / "obama.jpg")).embedding
    obama2 = other.analyze(read_bgr(photos / "obama2.jpg")).embedding
    biden = other.analyze(read_bgr(photos / "biden.jpg")).embedding
    assert obama1.model_id == model_id
    assert other.compare(obama1, obama2)[1] >= 0.6 > other.compare(obama1, biden)[1]
