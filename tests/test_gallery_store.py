"""The gallery without models: Redis records, erasure, encryption at rest, worker sync, export/import, the
open-set rule. Embeddings here are random unit vectors (the models' tests are in test_gallery_api.py)."""

from __future__ import annotations

import io
import itertools
import json
import time
import uuid
import zipfile

import numpy as np
import pytest
import redis

from edge.errors import ErrorCode, GalleryError
from edge.identify.index import GalleryIndex
from edge.identify.openset import Candidate, OpenSetPolicy, Outcome, Why, decide, threshold_for
from edge.services import free_port, redis_service
from edge.store import Store, keys
from edge.store.archive import ArchiveError, export_gallery, import_gallery
from edge.store.calibrations import CalibrationBusy, GazeCalibrations
from edge.store.gallery import FaceRecord, Gallery, GalleryLocked, SubjectNotFound
from edge.store.sealing import Sealer, create_key_file
from edge.vision.calibration import Calibration

MODEL = "test-model"
DIM = 16
GALLERY_PATTERNS = ("fm:subject*", "fm:faces:*", "fm:negatives:*", "fm:image:*", "fm:gallery:*", "fm:identifications",
                    "fm:probe:*", "fm:credentials*", "fm:gaze-calibration*")  # fmt: skip


def clear_gallery(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        for pattern in GALLERY_PATTERNS:
            for key in client.scan_iter(pattern):
                client.delete(key)


@pytest.fixture
def store(settings):
    clear_gallery(settings.redis.url)
    store = Store(settings.redis.url)
    yield store
    store.close()


@pytest.fixture
def gallery(store):
    return Gallery(store, keep_images=True)


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def face(vector: np.ndarray, model: str = MODEL) -> FaceRecord:
    return FaceRecord(uuid.uuid4().hex[:16], {model: vector})


def every_key_and_value(url: str) -> list[bytes]:
    """Every key of the database and every string in its values (hash fields and values, sets, streams)."""
    found: list[bytes] = []
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter("*"):
            found.append(key)
            kind = client.type(key)
            if kind == b"string":
                found.append(client.get(key) or b"")
            elif kind == b"hash":
                for k, v in client.hgetall(key).items():
                    found += [k, v]
            elif kind == b"zset":
                found += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"set":
                found += list(client.smembers(key))
            elif kind == b"stream":
                for _, fields in client.xrange(key):
                    for k, v in fields.items():
                        found += [k, v]
    return found


# -- records ------------------------------------------------------------------------------------------------------


def test_subjects_round_trip_and_page(gallery):
    rng = np.random.default_rng(1)
    ids = [gallery.create_subject(f"person {i}", {"badge": i}) for i in range(5)]
    gallery.add_face(ids[0], face(unit(rng)), b"jpeg bytes")
    subject = gallery.get(ids[0])
    assert subject.name == "person 0" and subject.metadata == {"badge": 0}
    assert len(subject.faces) == 1 and subject.faces[0].has_image
    assert gallery.image(ids[0], subject.faces[0].face_id) == b"jpeg bytes"
    assert gallery.count() == 5
    assert gallery.subject_ids(0, 2) == ids[:2] and gallery.subject_ids(2, 2) == ids[2:4]
    gallery.update_subject(ids[0], name="renamed")
    assert gallery.get(ids[0]).name == "renamed" and gallery.get(ids[0]).metadata == {"badge": 0}
    with pytest.raises(SubjectNotFound) as info:
        gallery.get("nobody")
    assert info.value.code is ErrorCode.UNKNOWN_SUBJECT


def test_photos_are_not_kept_unless_configured(store):
    gallery = Gallery(store, keep_images=False)
    sid = gallery.create_subject("no photos")
    gallery.add_face(sid, face(unit(np.random.default_rng(2))), b"jpeg bytes")
    assert not gallery.get(sid).faces[0].has_image
    assert b"jpeg bytes" not in every_key_and_value(store.url)


def test_delete_erases_every_trace(gallery, settings):
    rng = np.random.default_rng(3)
    keep = gallery.create_subject("Somebody Else")
    gallery.add_face(keep, face(unit(rng)))
    sid = gallery.create_subject("Erika Mustermann", {"badge": "77"})
    gallery.add_face(sid, face(unit(rng)), b"photo-of-erika")
    gallery.add_face(sid, face(unit(rng)), negative=True)
    entry = {"identification_id": "ident-1", "subject_id": sid, "name": "Erika Mustermann", "outcome": "identified"}
    gallery.record_identification(entry, {MODEL: unit(rng)}, probe_ttl=600, keep=10)
    gallery.record_identification({"identification_id": "ident-2", "subject_id": keep, "name": "Somebody Else"},
                                  {MODEL: unit(rng)}, probe_ttl=600, keep=10)  # fmt: skip
    gallery.set_gaze(sid, {"gain": 0.0731, "row_gap": 0.0412, "measured": 1.0, "device_id": "door-x"})
    GazeCalibrations(gallery.store).request(sid, "door-x")  # a second calibration asked for, still queued
    gallery.delete_subject(sid)
    blob = b"\n".join(every_key_and_value(settings.redis.url))
    for trace in (sid.encode(), b"Erika", b"photo-of-erika", b"ident-1"):
        assert trace not in blob, trace
    assert gallery.subject_ids() == [keep]
    assert [i["identification_id"] for i in gallery.recent_identifications(10)] == ["ident-2"]
    with pytest.raises(SubjectNotFound):
        gallery.delete_subject(sid)
    assert GazeCalibrations(gallery.store).take("door-x") is None  # the queued request went with the person


def test_a_gaze_calibration_is_kept_with_the_subject_sealed_and_carried_by_export(store, tmp_path, settings):
    key = tmp_path / "gallery.key"
    create_key_file(key)
    gallery = Gallery(store, Sealer.from_file(key))
    sid = gallery.create_subject("Calibrated")
    assert gallery.gaze_of(sid) is None and gallery.get(sid).summary()["gaze_calibration"] is None
    learnt = {"gain": 0.0731, "row_gap": 0.0412, "measured": 1795000000.0, "device_id": "door-x"}
    gallery.set_gaze(sid, learnt)
    assert gallery.gaze_of(sid) == learnt and gallery.get(sid).summary()["gaze_calibration"] == learnt
    assert b"0.0731" not in b"\n".join(every_key_and_value(settings.redis.url))  # sealed like the embeddings
    with pytest.raises(GalleryLocked):
        Gallery(store).gaze_of(sid)
    archive = io.BytesIO()
    export_gallery(gallery, archive, "door-x")
    gallery.set_gaze(sid, None)
    assert gallery.gaze_of(sid) is None
    archive.seek(0)
    import_gallery(gallery, archive)
    assert gallery.gaze_of(sid) == learnt


def test_a_calibration_finishing_after_the_erasure_writes_nothing_back(gallery, settings):
    sid = gallery.create_subject("Gone Meanwhile")
    gallery.delete_subject(sid)
    with pytest.raises(SubjectNotFound):
        gallery.set_gaze(sid, {"gain": 0.05, "row_gap": 0.03})
    assert sid.encode() not in b"\n".join(every_key_and_value(settings.redis.url))


def test_calibration_requests_are_a_queue_of_one_per_device_and_expire_as_failed(gallery):
    requests = GazeCalibrations(gallery.store)
    first, second = gallery.create_subject("First"), gallery.create_subject("Second")
    assert requests.request(first, "door-x")["state"] == "requested"
    assert requests.request(first, "door-x")["state"] == "requested"  # asking twice is harmless
    with pytest.raises(CalibrationBusy) as info:
        requests.request(second, "door-x")
    assert info.value.status == 409
    assert requests.request(second, "door-y")["state"] == "requested"  # another device has its own queue
    assert requests.take("door-x") == first and requests.take("door-x") is None
    requests.update(first, "door-x", "waiting", expires=time.time() - 1)  # its worker died while waiting
    assert requests.status(first)["state"] == "failed" and requests.status(first)["reasons"] == ["interrupted"]
    requests.update(second, "door-y", "requested", expires=time.time() - 1)  # no door flow ever took it
    assert requests.status(second)["reasons"] == ["not_taken"]
    requests.update(first, "door-x", "saved", result={"gain": 0.05, "row_gap": 0.03})
    assert requests.status(first)["state"] == "saved"


def test_an_enrolment_that_never_finished_is_swept_and_leaves_no_trace(gallery, settings):
    """A hub that dies between creating a person and enrolling their photos leaves a pending subject: the next sweep
    erases it (once old enough), a finished enrolment is never swept."""
    rng = np.random.default_rng(5)
    finished = gallery.create_subject("Finished", pending=True)
    gallery.add_face(finished, face(unit(rng)))
    gallery.finish_subject(finished)
    abandoned = gallery.create_subject("Abandoned Midway", pending=True)  # ...and the hub died here
    assert gallery.sweep_pending(older_than=600) == []  # too recent: its enrolment may still be running
    assert gallery.sweep_pending(older_than=0) == [abandoned]
    assert gallery.subject_ids() == [finished]
    blob = b"\n".join(every_key_and_value(settings.redis.url))
    assert abandoned.encode() not in blob and b"Abandoned" not in blob
    assert gallery.sweep_pending(older_than=0) == []


def test_encryption_at_rest(store, tmp_path, settings):
    key_file = tmp_path / "gallery.key"
    create_key_file(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        create_key_file(key_file)  # never overwritten: that would lock the gallery
    sealed = Gallery(store, Sealer.from_file(key_file), keep_images=True)
    vector = unit(np.random.default_rng(4))
    sid = sealed.create_subject("sealed")
    sealed.add_face(sid, face(vector), b"secret-photo")
    blob = b"\n".join(every_key_and_value(settings.redis.url))
    assert vector.tobytes() not in blob and b"secret-photo" not in blob
    assert np.array_equal(sealed.get(sid).faces[0].embeddings[MODEL], vector)
    assert sealed.image(sid, sealed.get(sid).faces[0].face_id) == b"secret-photo"
    with pytest.raises(GalleryLocked):
        Gallery(store).get(sid)  # no key
    other = tmp_path / "other.key"
    create_key_file(other)
    with pytest.raises(GalleryLocked):
        Gallery(store, Sealer.from_file(other)).get(sid)  # another key


# -- workers follow the gallery -----------------------------------------------------------------------------------


def test_index_follows_changes_incrementally_and_after_missing_them(gallery, monkeypatch):
    rng = np.random.default_rng(5)
    index = GalleryIndex(MODEL, DIM)
    a = gallery.create_subject("A")
    va = unit(rng)
    gallery.add_face(a, face(va))
    b = gallery.create_subject("B")
    gallery.add_face(b, face(unit(rng)))
    gallery.add_face(b, face(unit(rng), model="another-model"))  # never compared
    assert index.sync(gallery) and (index.subjects, index.faces) == (2, 2)
    assert not index.sync(gallery)  # nothing changed
    assert index.search(va, k=1)[0].candidate.subject_id == a
    # Incremental: a rename, a new subject and a deletion, picked up from what changed since the index's version.
    gallery.update_subject(a, name="A2")
    c = gallery.create_subject("C")
    vc = unit(rng)
    gallery.add_face(c, face(vc))
    gallery.delete_subject(b)
    loads = []
    monkeypatch.setattr(gallery, "iterate", lambda *a, **k: loads.append(1) or iter(()))
    assert index.sync(gallery)
    assert not loads, "an incremental change reloaded everything"
    assert index.subjects == 2 and index.version == gallery.version()
    best = index.search(vc, k=2)
    assert [m.candidate.subject_id for m in best] == [c, a] and best[1].name == "A2"
    monkeypatch.undo()
    # A worker further behind than the removals remembered reloads in full.
    gallery.store.client.set(keys.gallery_removals_floor(), gallery.version())
    stale = GalleryIndex(MODEL, DIM)
    stale.version = 1
    assert stale.sync(gallery) and stale.subjects == 2


def test_search_takes_each_subjects_best_face_and_reports_negatives(gallery):
    rng = np.random.default_rng(6)
    index = GalleryIndex(MODEL, DIM)
    probe = unit(rng)
    a = gallery.create_subject("A")
    gallery.add_face(a, face(unit(rng)))
    gallery.add_face(a, face(probe))  # A's second face is the probe itself
    gallery.add_face(a, face(probe * 0.9 + unit(rng) * 0.1), negative=True)
    index.sync(gallery)
    [match] = index.search(probe, k=5)
    assert match.candidate.cosine == pytest.approx(1.0, abs=1e-5)
    assert match.candidate.negative_cosine is not None and match.candidate.negative_cosine < 1.0


# -- export / import ----------------------------------------------------------------------------------------------


def test_export_then_import_on_a_second_redis(gallery, tmp_path):
    rng = np.random.default_rng(7)
    sid = gallery.create_subject("Exported", {"badge": "9"})
    vector = unit(rng)
    gallery.add_face(sid, face(vector), b"photo")
    gallery.add_face(sid, face(unit(rng)), negative=True)
    buffer = io.BytesIO()
    assert export_gallery(gallery, buffer, "door-1") == 1
    second = redis_service(free_port(), tmp_path / "redis2", persistent=False).start()
    try:
        other = Gallery(Store(f"redis://127.0.0.1:{second.port}/0"), keep_images=True)
        report = import_gallery(other, io.BytesIO(buffer.getvalue()))
        assert (report.subjects, report.replaced, report.faces, report.images) == (1, 0, 1, 1)
        copy = other.get(sid)
        assert copy.name == "Exported" and copy.metadata == {"badge": "9"} and len(copy.negatives) == 1
        assert np.array_equal(copy.faces[0].embeddings[MODEL], vector)
        assert other.image(sid, copy.faces[0].face_id) == b"photo"
        assert import_gallery(other, io.BytesIO(buffer.getvalue())).replaced == 1  # same id: replaced, not doubled
        assert other.count() == 1 and len(other.get(sid).faces) == 1
    finally:
        second.stop()


def test_a_damaged_or_foreign_archive_is_refused_before_anything_is_written(gallery):
    gallery.add_face(gallery.create_subject("X"), face(unit(np.random.default_rng(8))))
    buffer = io.BytesIO()
    export_gallery(gallery, buffer, "door-1")
    clear_gallery(gallery.store.url)
    # Alter subjects.jsonl without updating the manifest's checksum.
    altered = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(altered, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data.replace(b'"X"', b'"Y"') if item.filename == "subjects.jsonl" else data)
    for bad in (altered.getvalue(), b"not a zip", buffer.getvalue()[: len(buffer.getvalue()) // 2]):
        with pytest.raises(ArchiveError) as info:
            import_gallery(gallery, io.BytesIO(bad))
        assert info.value.code is ErrorCode.INVALID_ARCHIVE
    foreign = io.BytesIO()
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"format": "something-else"}))
    with pytest.raises(ArchiveError, match="not a facematch-gallery"):
        import_gallery(gallery, io.BytesIO(foreign.getvalue()))
    assert gallery.count() == 0


# -- the open-set rule --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration():
    return Calibration.load("sface-2021dec-flip")


def test_the_threshold_rises_with_the_gallery_and_keeps_fpir_over_n(calibration):
    policy = OpenSetPolicy(target_fpir=0.01, min_score=0.0)
    previous = -1.0
    for n in (1, 10, 100, 1_000, 10_000, 100_000):
        threshold = threshold_for(calibration, n, policy)
        assert threshold.cosine > previous
        assert calibration.fmr(threshold.cosine) == pytest.approx(0.01 / n, rel=0.02)
        previous = threshold.cosine
    # The floor: a tiny gallery is never matched more loosely than a 1:1 comparison at the default threshold.
    floored = threshold_for(calibration, 1, OpenSetPolicy(target_fpir=0.01, min_score=0.6))
    assert floored.cosine == pytest.approx(calibration.cosine_for(0.6))


def test_calibration_extends_past_its_last_decade_continuously(calibration):
    cosines = [calibration.cosine_for_fmr(10.0**-e) for e in np.arange(2, 9, 0.25)]
    assert all(b > a for a, b in itertools.pairwise(cosines))
    for e in (3, 5, 6, 7):
        assert calibration.fmr(calibration.cosine_for_fmr(10.0**-e)) == pytest.approx(10.0**-e, rel=1e-6)


def test_decide_names_only_above_the_threshold_and_respects_margin_and_negatives(calibration):
    policy = OpenSetPolicy(target_fpir=0.01, margin_decades=0.5, min_score=0.0)
    threshold = threshold_for(calibration, 100, policy)
    high, low = threshold.cosine + 0.1, threshold.cosine - 0.05
    assert decide([], threshold, calibration, policy).why is Why.EMPTY_GALLERY
    named = decide([Candidate("a", high), Candidate("b", low - 0.1)], threshold, calibration, policy)
    assert named.outcome is Outcome.IDENTIFIED and named.subject_id == "a"
    below = decide([Candidate("a", low)], threshold, calibration, policy)
    assert below.outcome is Outcome.UNKNOWN and below.why is Why.BELOW_THRESHOLD
    close = decide([Candidate("a", high), Candidate("b", high - 0.001)], threshold, calibration, policy)
    assert close.outcome is Outcome.UNKNOWN and close.why is Why.AMBIGUOUS
    marked = decide([Candidate("a", high, negative_cosine=high + 0.01)], threshold, calibration, policy)
    assert marked.outcome is Outcome.UNKNOWN and marked.why is Why.MARKED_NOT_THIS_PERSON
    # The next candidate may still be named when it clears the threshold on its own.
    second = decide([Candidate("a", high, negative_cosine=high + 0.01), Candidate("b", high - 0.02)],
                    threshold, calibration, OpenSetPolicy(target_fpir=0.01, min_score=0.0))  # fmt: skip
    assert second.outcome is Outcome.IDENTIFIED and second.subject_id == "b"


def test_card_numbers_are_unique_and_not_given_again_after_a_delete_without_saying_so(gallery):
    first = gallery.create_subject("A", credential=1001)
    assert gallery.get(first).credential == 1001
    with pytest.raises(GalleryError) as taken:
        gallery.create_subject("B", credential=1001)
    assert taken.value.code is ErrorCode.CREDENTIAL_IN_USE
    automatic = gallery.create_subject("C")
    assert gallery.get(automatic).credential not in (None, 1001)
    gallery.delete_subject(first)
    with pytest.raises(GalleryError) as retired:
        gallery.create_subject("D", credential=1001)
    assert retired.value.code is ErrorCode.CREDENTIAL_RETIRED
    again = gallery.create_subject("D", credential=1001, reuse_credential=True)  # said so: allowed
    assert gallery.get(again).credential == 1001
    numbers = {gallery.get(gallery.create_subject(f"E{i}")).credential for i in range(5)}
    assert len(numbers) == 5 and 1001 not in numbers


def _fused(first: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """A template shaped like the accurate profile's: unit parts, concatenated, scaled to one unit vector."""
    joined = np.concatenate([first / np.linalg.norm(first), rest / np.linalg.norm(rest)])
    return (joined / np.linalg.norm(joined)).astype(np.float32)


def test_a_large_fused_gallery_is_searched_in_two_stages_that_only_ever_lower_scores():
    from edge.identify.index import Entry

    rng = np.random.default_rng(8)
    subjects, first, rest = 3000, 16, 48
    parts = [(rng.standard_normal(first), rng.standard_normal(rest)) for _ in range(subjects)]
    empty = np.zeros((0, first + rest), np.float32)
    entries = {}
    for i, p in enumerate(parts):  # every third subject has a second, unrelated face enrolled first
        faces = [_fused(rng.standard_normal(first), rng.standard_normal(rest))] if i % 3 == 0 else []
        entries[f"s{i}"] = Entry(f"s{i}", np.stack([*faces, _fused(*p)]), empty)
    exact = GalleryIndex(MODEL, first + rest)
    staged = GalleryIndex(MODEL, first + rest, first_stage=first, two_stage_rows=1000, min_kept=1)
    for index in (exact, staged):
        index.load_all(dict(entries), 1)
    assert staged.two_stages and not exact.two_stages
    small = GalleryIndex(MODEL, first + rest, first_stage=first)  # under the default two_stage_rows: one stage
    small.load_all(dict(entries), 1)
    assert not small.two_stages
    # Enrolled people, seen again with some noise in both parts: the same subject and score as the exact search.
    for i in range(0, subjects, 150):
        a, b = parts[i]
        probe = _fused(a + 0.5 * rng.standard_normal(first), b + 0.5 * rng.standard_normal(rest))
        want, got = exact.search(probe, k=1)[0].candidate, staged.search(probe, k=1)[0].candidate
        assert got.subject_id == want.subject_id == f"s{i}" and got.cosine == pytest.approx(want.cosine, abs=1e-6)
    # A probe like someone only in the trailing columns is outside the first stage's share: they are not a
    # candidate, and nobody is given a better score than the exact search gives.
    a, b = parts[7]
    probe = np.concatenate([-0.2 * a / np.linalg.norm(a), b / np.linalg.norm(b)]).astype(np.float32)
    probe /= np.linalg.norm(probe)
    assert exact.search(probe, k=1)[0].candidate.subject_id == "s7"
    for want, got in zip(exact.search(probe, k=5), staged.search(probe, k=5), strict=True):
        assert got.candidate.cosine <= want.candidate.cosine + 1e-6
    assert "s7" not in [m.candidate.subject_id for m in staged.search(probe, k=5)]


def test_bench_identify_compares_the_two_stages_with_the_exact_search_on_the_protocol():
    from edge.bench.identify import build_protocol, compare_two_stages
    from edge.bench.lfw import EmbeddingTable
    from edge.identify.openset import OpenSetPolicy
    from edge.vision.calibration import Calibration

    rng = np.random.default_rng(9)
    first, rest = 32, 96  # strangers' cosines spread ~0.09: none clears the threshold (0.37)
    names, vectors = [], []
    for person in range(300):  # 200 people with two photos (enrolled + mated probe), 100 strangers
        a, b = rng.standard_normal(first), rng.standard_normal(rest)
        for photo in range(2 if person < 200 else 1):
            names.append(f"P{person}/P{person}_{photo + 1:04d}.jpg")
            vectors.append(_fused(a + 0.1 * rng.standard_normal(first), b + 0.1 * rng.standard_normal(rest)))
    table = EmbeddingTable(names, np.stack(vectors), [], {}, 0.0)
    calibration = Calibration.fit("toy", rng.normal(0.0, 0.12, 100_000), rng.normal(0.8, 0.05, 500), {})
    figures = compare_two_stages(table, build_protocol(table), calibration, OpenSetPolicy(), first)
    assert (figures.gallery, figures.kept_rows, figures.probes) == (200, 2, 300)
    assert figures.decisions_differ == 0  # well-separated people: the kept 1 % holds the right one
    assert 0 <= figures.top1_differs <= 100  # strangers' best candidates may differ
