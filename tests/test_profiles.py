"""Matching profiles: ``fast`` (SFace) and ``accurate`` (SFace, FaceNet and MobileFaceNet fused). The fusion is
z-score fusion in one cosine; a template records its profile and is never compared with another profile's; /match
and the gallery follow the configured profile."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from edge.bench.lfw import profile_settings
from edge.vision.fusion import Fusion, FusionMissing
from edge.vision.model_id import accurate_parts, configured_model_id


def _unit(rng: np.random.Generator, n: int = 128) -> np.ndarray:
    v = rng.standard_normal(n)
    return v / np.linalg.norm(v)


def test_the_fused_cosine_is_the_z_scored_sum_of_the_parts_up_to_an_affine_map():
    rng = np.random.default_rng(3)
    fusion = Fusion(("a", "b"), (0.02, 0.05), (0.09, 0.04))
    z_sums, fused = [], []
    for _ in range(50):
        a1, a2, b1, b2 = (_unit(rng) for _ in range(4))
        cosines = np.array([a1 @ b1, a2 @ b2])
        z_sums.append(float(np.sum((cosines - np.array(fusion.impostor_mean)) / np.array(fusion.impostor_std))))
        fused.append(float(fusion.fuse([a1, a2]) @ fusion.fuse([b1, b2])))
    slope, intercept = np.polyfit(z_sums, fused, 1)
    assert np.allclose(np.array(z_sums) * slope + intercept, fused, atol=1e-5)
    assert slope > 0  # the same order: a higher z-sum is a higher fused cosine
    assert np.isclose(np.linalg.norm(fusion.fuse([a1, a2])), 1.0, atol=1e-6)


def test_refitted_weights_make_another_model_id_and_a_missing_fusion_says_how_to_make_it(tmp_path):
    one = Fusion(("sface-2021dec-flip", "facenet-msceleb-flip"), (0.0, 0.0), (0.1, 0.05))
    other = Fusion(one.parts, (0.0, 0.0), (0.1, 0.06))
    assert one.model_id != other.model_id and one.model_id.startswith("fused-sface+facenet-")
    one.save(tmp_path)
    assert Fusion.load(one.parts, tmp_path).model_id == one.model_id
    with pytest.raises(FusionMissing, match="calibrate --profile accurate"):
        Fusion.load(("x", "y"), tmp_path)


@pytest.mark.parametrize("embedders", [None, ["sface", "facenet"]])
def test_each_shipped_fusion_was_fitted_on_view_1_and_names_its_templates(embedders):
    """The default three-part fusion, and the licence-cleaner two-part one an operator may choose instead."""
    from edge.config import load_settings
    from edge.vision.calibration import Calibration

    environ = {"FACEMATCH_MATCHING__PROFILE": "accurate"}
    if embedders:
        environ["FACEMATCH_MATCHING__ACCURATE_EMBEDDERS"] = json.dumps(embedders)
    settings = load_settings(environ=environ)
    fusion = Fusion.load(accurate_parts(settings.matching.accurate_embedders))
    assert len(fusion.parts) == len(embedders or ["sface", "facenet", "mbf"])
    assert "View 1" in fusion.meta["source"] and "View 2 pairs excluded" in fusion.meta["source"]
    assert configured_model_id(settings) == fusion.model_id
    assert configured_model_id(load_settings(environ={})) == "sface-2021dec-flip"
    assert Calibration.load(fusion.model_id).meta["source"].startswith("LFW View 1")  # 0.6 keeps its meaning


@pytest.mark.parametrize("embedders", [["sface"], ["sface", "sface"], ["sface", "arcface"]])
def test_an_accurate_profile_needs_two_known_embedders_each_once(embedders):
    from edge.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="accurate_embedders"):
        load_settings(environ={"FACEMATCH_MATCHING__ACCURATE_EMBEDDERS": json.dumps(embedders)})


# -- the accurate engine, /match and the gallery with real faces ----------------------------------------------------


@pytest.fixture(scope="module")
def accurate_settings(model_settings, shared_dir, tmp_path_factory):
    """The model settings with the accurate profile, its embedders fetched (FaceNet converted) by the project's
    fetcher."""
    from models.derive import keras_to_onnx
    from models.fetch import FetchError, fetch_one, select

    work = tmp_path_factory.mktemp("fetch")
    for spec in select(model_settings.matching.accurate_embedders, everything=False):
        try:
            fetched = fetch_one(spec, model_settings, work, say=lambda _: None)
        except FetchError as exc:
            pytest.skip(f"{spec.name} cannot be fetched here: {exc}")
        if spec.name == "facenet":
            keras_to_onnx(fetched)
    return profile_settings(model_settings, "accurate")


@pytest.fixture(scope="module")
def accurate_engine(accurate_settings):
    from edge.vision.engine import FaceEngine

    return FaceEngine(accurate_settings)


def test_the_accurate_engine_makes_one_unit_template_from_its_embedders(accurate_engine, lfw):
    from tests.conftest import read_bgr

    dimension = accurate_engine.embedder_dimension
    assert dimension == 128 + 128 + 512 and accurate_engine.model_id.startswith("fused-sface+facenet+mbf-")
    assert "+" in accurate_engine.runs_on()["embedding"]
    powell = [accurate_engine.analyze(read_bgr(p)).embedding for p in sorted((lfw / "Colin_Powell").glob("*.jpg"))[:2]]
    blair = accurate_engine.analyze(read_bgr(sorted((lfw / "Tony_Blair").glob("*.jpg"))[0])).embedding
    assert all(e is not None and e.vector.shape == (dimension,) for e in (*powell, blair))
    same = accurate_engine.compare(powell[0], powell[1])[1]
    different = accurate_engine.compare(powell[0], blair)[1]
    assert same >= 0.6 > different, (same, different)


def test_match_and_the_gallery_follow_the_profile_and_never_compare_across_profiles(
    accurate_settings, accurate_engine, engine, settings, lfw
):
    from tests.conftest import hub_client, start_worker, wait_for_inference
    from tests.test_gallery_store import clear_gallery

    def photo(person: str, index: int) -> str:
        return base64.b64encode(sorted((lfw / person).glob("*.jpg"))[index].read_bytes()).decode()

    clear_gallery(settings.redis.url)
    # Enrolled under the fast profile...
    _, stop = start_worker(settings, engine)
    client = hub_client(settings)
    wait_for_inference(client, routes=("enroll",))
    enrolled = client.post("/subjects", json={"name": "Colin Powell", "photos": [photo("Colin_Powell", 0)]})
    assert enrolled.status_code == 201, enrolled.text
    subject_id = enrolled.json()["subject_id"]
    client.__exit__(None, None, None)
    stop()
    # ...then the device is switched to the accurate profile: the fast template is not compared with its probes.
    accurate = settings.model_copy(update={"matching": accurate_settings.matching, "models": accurate_settings.models})
    _, stop = start_worker(accurate, accurate_engine)
    client = hub_client(accurate)
    try:
        wait_for_inference(client, routes=("identify", "match"))
        listed = client.get("/subjects").json()["subjects"][0]
        assert listed["subject_id"] == subject_id and listed["faces"] == 1 and listed["faces_for_model"] == 0
        unknown = client.post("/identify", json={"image": photo("Colin_Powell", 1)}).json()
        assert unknown["outcome"] == "unknown" and unknown["model"] == accurate_engine.model_id
        reembed = client.post("/gallery/reembed").json()  # no photo was kept: the operator is told who to re-enrol
        assert reembed["model"] == accurate_engine.model_id and reembed["reembedded"] == {}
        assert [s["subject_id"] for s in reembed["needs_new_photos"]] == [subject_id]
        # Re-enrolled under the accurate profile: found, with a fused template.
        added = client.post(f"/subjects/{subject_id}/faces", json={"photos": [photo("Colin_Powell", 0)]})
        assert added.status_code in (200, 201), added.text
        found = client.post("/identify", json={"image": photo("Colin_Powell", 1)}).json()
        assert found["outcome"] == "identified" and found["subject"]["subject_id"] == subject_id
        match = client.post("/match", json={"image1": photo("Colin_Powell", 0), "image2": photo("Colin_Powell", 1)})
        assert match.status_code == 200 and match.json()["match"] is True, match.text
        other = client.post("/match", json={"image1": photo("Colin_Powell", 0), "image2": photo("Tony_Blair", 0)})
        assert other.status_code == 200 and other.json()["match"] is False, other.text
    finally:
        client.__exit__(None, None, None)
        stop()


def test_the_quality_gate_review_counts_each_reason_and_the_errors_it_avoided():
    """``bench lfw``'s review of /match's refusals: which images, which pairs, and how often those pairs would have
    been decided wrongly had they been let through, against the others."""
    from edge.bench.lfw import EmbeddingTable, Pair, refusals_for

    names = ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg", "C/C_0001.jpg"]
    table = EmbeddingTable(names, np.zeros((4, 128), np.float32), [], {"B/B_0001.jpg": ["face_too_small"]}, 1.0)
    a1, a2, b, c = names
    pairs = [Pair(a1, a2, True, 0), Pair(a1, b, False, 0), Pair(b, c, False, 0), Pair(a2, c, False, 0)]
    decided_same = np.array([True, True, False, False])  # the pair A-B is wrongly called a match
    review = refusals_for(table, pairs, decided_same)
    assert review.images_by_reason == {"face_too_small": ["B/B_0001.jpg"]}
    assert review.refused_pairs == 2 and review.pairs_by_reason == {"face_too_small": 2}
    assert review.error_rate_refused_pairs == 0.5 and review.error_rate_by_reason == {"face_too_small": 0.5}
    assert review.error_rate_other_pairs == 0.0 and review.accuracy_as_match_decides == 1.0


def test_loading_an_embedder_whose_weights_are_not_for_every_use_says_so_in_the_log(caplog):
    from edge.vision.engine import warn_of_licences

    with caplog.at_level("WARNING", logger="edge.vision.engine"):
        warn_of_licences(["sface"])
        assert not caplog.records  # Apache-2.0: nothing to say
        warn_of_licences(["sface", "facenet", "mbf"])
    said = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records}
    assert set(said) == {"embedder facenet", "embedder mbf"}
    assert "non-commercial" in said["embedder mbf"] and "MS-Celeb-1M" in said["embedder facenet"]
