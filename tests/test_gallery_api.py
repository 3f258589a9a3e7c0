"""The gallery through the hub and real inference workers, with real faces (LFW images in ../shared/data/faces):
enrolment with good and bad photos, identification of known and unknown people, a mix-up warning, "this is not X",
erasure, export -> import, and a change reaching a second worker."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import zipfile

import pytest

from tests.conftest import hub_client, start_worker, wait_for_inference
from tests.test_gallery_store import clear_gallery, every_key_and_value

GALLERY_ROUTES = ("identify", "enroll", "negative", "reembed")


def photo(lfw, person: str, index: int) -> str:
    return base64.b64encode(sorted((lfw / person).glob("*.jpg"))[index].read_bytes()).decode()


@pytest.fixture
def api(settings, engine):
    clear_gallery(settings.redis.url)
    worker, stop = start_worker(settings, engine)
    client = hub_client(settings)
    wait_for_inference(client, routes=GALLERY_ROUTES)
    client.worker = worker
    yield client
    client.__exit__(None, None, None)
    stop()


def enroll(api, name: str, photos: list[str], **extra) -> dict:
    response = api.post("/subjects", json={"name": name, "photos": photos, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def test_enrolment_reports_each_photo(api, lfw, faces_dir):
    no_face = base64.b64encode((faces_dir / "insightface/cpp-package/inspireface/test_res/data/crop/no_face.png")
                               .read_bytes()).decode()  # fmt: skip
    first = photo(lfw, "Colin_Powell", 0)
    body = enroll(api, "Colin Powell", [first, photo(lfw, "Colin_Powell", 1), no_face, first, "bm90IGFuIGltYWdl"])
    statuses = [p["status"] for p in body["photos"]]
    assert statuses == ["added", "added", "rejected", "duplicate", "rejected"]
    assert body["photos"][2]["reasons"][0]["code"] == "no_face"
    assert body["photos"][4]["reasons"][0]["code"] == "invalid_image"
    assert body["faces"] == 2 and body["subject"]["faces_for_model"] == 2
    subject = api.get(f"/subjects/{body['subject_id']}").json()["subject"]
    assert subject["name"] == "Colin Powell" and len(subject["face_list"]) == 2
    assert all(not f["has_image"] for f in subject["face_list"])  # embeddings only, by default


def test_no_usable_photo_is_422_and_leaves_no_subject(api, faces_dir):
    no_face = base64.b64encode((faces_dir / "insightface/cpp-package/inspireface/test_res/data/crop/no_face.png")
                               .read_bytes()).decode()  # fmt: skip
    response = api.post("/subjects", json={"name": "Nobody", "photos": [no_face]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "no_usable_photo" and error["photos"][0]["status"] == "rejected"
    assert api.get("/subjects").json()["total"] == 0


def test_identify_known_and_unknown_people(api, lfw):
    people = {}
    for person in ("Colin_Powell", "Tony_Blair", "George_W_Bush", "Donald_Rumsfeld"):
        people[person] = enroll(api, person.replace("_", " "), [photo(lfw, person, 0)])["subject_id"]
    known = api.post("/identify", json={"image": photo(lfw, "Tony_Blair", 3)})
    assert known.status_code == 200, known.text
    body = known.json()
    assert body["outcome"] == "identified" and body["subject"]["subject_id"] == people["Tony_Blair"]
    assert body["similarity_score"] >= body["threshold"]["similarity_score"] - 1e-9
    assert body["threshold"]["gallery_faces"] == 4 and "4 enrolled faces" in body["threshold"]["explanation"]
    # A person never enrolled (one photo in LFW): unknown, with the closest subjects still listed.
    stranger = api.post("/identify", json={"image": photo(lfw, "Abdel_Madi_Shabneh", 0)}).json()
    assert stranger["outcome"] == "unknown" and stranger["reason"]["code"] == "below_threshold"
    assert "subject" not in stranger and len(stranger["candidates"]) == 3
    recent = api.get("/identifications", params={"count": 5}).json()["identifications"]
    assert [r["outcome"] for r in recent] == ["unknown", "identified"]


def test_identify_refuses_a_face_it_cannot_use(api, faces_dir):
    no_face = base64.b64encode((faces_dir / "insightface/cpp-package/inspireface/test_res/data/crop/no_face.png")
                               .read_bytes()).decode()  # fmt: skip
    response = api.post("/identify", json={"image": no_face})
    assert response.status_code == 422 and response.json()["error"]["code"] == "no_face"
    assert api.get("/subjects/nobody").json()["error"]["code"] == "unknown_subject"


def test_a_face_that_belongs_to_another_subject_is_reported_as_a_mixup(api, lfw):
    blair = enroll(api, "Tony Blair", [photo(lfw, "Tony_Blair", 0)])["subject_id"]
    response = api.post("/subjects", json={"name": "Not Blair", "photos": [photo(lfw, "Tony_Blair", 5)]})
    assert response.status_code == 422
    report = response.json()["error"]["photos"][0]
    assert report["status"] == "mixup" and report["other_subject"]["subject_id"] == blair
    forced = enroll(api, "Not Blair", [photo(lfw, "Tony_Blair", 5)], allow_mixup=True)
    assert forced["photos"][0]["status"] == "added"


def test_this_is_not_x_stops_the_same_stranger_being_given_that_name(api, lfw):
    bush = enroll(api, "George W Bush", [photo(lfw, "George_W_Bush", 0)])["subject_id"]
    stranger = photo(lfw, "Colin_Powell", 3)
    first = api.post("/identify", json={"image": stranger}).json()
    assert first["candidates"][0]["subject_id"] == bush
    marked = api.post(f"/subjects/{bush}/negatives", json={"identification_id": first["identification_id"]})
    assert marked.status_code == 200, marked.text
    again = api.post("/identify", json={"image": stranger}).json()
    assert again["outcome"] == "unknown" and again["candidates"][0]["marked_not_this_person"]
    # Bush himself is still recognised.
    assert api.post("/identify", json={"image": photo(lfw, "George_W_Bush", 4)}).json()["outcome"] == "identified"
    gone = api.post(f"/subjects/{bush}/negatives", json={"identification_id": "0" * 32})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_identification"


def test_rename_and_delete_erase_everything(api, lfw, settings):
    sid = enroll(api, "Gerhard Schroeder", [photo(lfw, "Gerhard_Schroeder", 0)])["subject_id"]
    assert api.patch(f"/subjects/{sid}", json={"name": "G. Schroeder"}).json()["subject"]["name"] == "G. Schroeder"
    api.post("/identify", json={"image": photo(lfw, "Gerhard_Schroeder", 1)})
    assert api.delete(f"/subjects/{sid}").json() == {"success": True, "deleted": sid}
    blob = b"\n".join(every_key_and_value(settings.redis.url))
    assert sid.encode() not in blob and b"Schroeder" not in blob
    after = api.post("/identify", json={"image": photo(lfw, "Gerhard_Schroeder", 1)}).json()
    assert after["outcome"] == "unknown" and after["threshold"]["gallery_faces"] == 0
    assert api.delete(f"/subjects/{sid}").status_code == 404


def test_a_gaze_calibration_is_asked_for_followed_and_forgotten_over_http(api, lfw, settings):
    import redis

    from edge.store import keys

    sid = enroll(api, "Gerhard Schroeder", [photo(lfw, "Gerhard_Schroeder", 0)])["subject_id"]
    other = enroll(api, "Colin Powell", [photo(lfw, "Colin_Powell", 0)])["subject_id"]
    path = f"/subjects/{sid}/gaze-calibration"
    assert api.get(path).json() == {"success": True, "subject_id": sid, "stored": None, "request": None}
    refused = api.post(path)  # no door flow runs (no camera here)
    assert refused.status_code == 501 and refused.json()["error"]["code"] == "not_supported"
    assert "door flow" in refused.json()["error"]["message"]
    unknown = api.post("/subjects/nobody/gaze-calibration")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_subject"
    lock = keys.door_flow_lock(settings.device_id)
    with redis.Redis.from_url(settings.redis.url) as client:
        client.set(lock, "a-worker", px=30_000)  # as the worker running the device's door flow holds it
        try:
            queued = api.post(path)
            assert queued.status_code == 202 and queued.json()["request"]["state"] == "requested"
            assert client.get(keys.gaze_calibration_request(settings.device_id)) == sid.encode()
            busy = api.post(f"/subjects/{other}/gaze-calibration")
            assert busy.status_code == 409 and busy.json()["error"]["code"] == "calibration_busy"
            assert api.get(path).json()["request"]["device_id"] == settings.device_id
        finally:
            client.delete(lock)
    api.worker.gallery.gallery.set_gaze(sid, {"gain": 0.07, "row_gap": 0.03, "measured": 1.0, "device_id": "d"})
    assert api.get(f"/subjects/{sid}").json()["subject"]["gaze_calibration"]["gain"] == 0.07
    assert api.delete(path).status_code == 200 and api.get(path).json()["stored"] is None
    assert api.delete(f"/subjects/{sid}").status_code == 200
    blob = b"\n".join(every_key_and_value(settings.redis.url))
    assert sid.encode() not in blob  # the request and its queue went with the person


def test_export_then_import_restores_identification(api, lfw):
    sid = enroll(api, "Jean Chretien", [photo(lfw, "Jean_Chretien", 0), photo(lfw, "Jean_Chretien", 1)])["subject_id"]
    exported = api.get("/gallery/export")
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        assert {"manifest.json", "subjects.jsonl"} <= set(archive.namelist())
    api.delete(f"/subjects/{sid}")
    imported = api.post("/gallery/import", content=exported.content, headers={"Content-Type": "application/zip"})
    assert imported.status_code == 200, imported.text
    report = imported.json()
    assert (report["subjects"], report["faces"], report["needs_new_photos"]) == (1, 2, [])
    found = api.post("/identify", json={"image": photo(lfw, "Jean_Chretien", 3)}).json()
    assert found["outcome"] == "identified" and found["subject"]["subject_id"] == sid
    bad = api.post("/gallery/import", content=b"PK\x03\x04 broken", headers={"Content-Type": "application/zip"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_archive"


def test_importing_faces_of_another_model_says_who_needs_new_photos(api, lfw):
    enroll(api, "Jean Chretien", [photo(lfw, "Jean_Chretien", 0)])
    exported = api.get("/gallery/export").content
    clear_gallery(api.app.state.hub.settings.redis.url)
    # The same archive as if made on a device with another embedding model.
    renamed = rewrite_model(exported, "sface-2021dec-flip", "other-model-v1")
    report = api.post("/gallery/import", content=renamed).json()
    assert report["models"] == ["other-model-v1"]
    assert [s["name"] for s in report["needs_new_photos"]] == ["Jean Chretien"]


def rewrite_model(archive: bytes, old: str, new: str) -> bytes:
    """The archive as if its embeddings came from model ``new`` (checksums updated: a valid archive)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        manifest = json.loads(source.read("manifest.json"))
        for name in source.namelist():
            if name == "manifest.json":
                continue
            data = source.read(name)
            if name == "subjects.jsonl":
                data = data.replace(old.encode(), new.encode())
                manifest["files"][name] = hashlib.sha256(data).hexdigest()
            target.writestr(name, data)
        target.writestr("manifest.json", json.dumps(manifest))
    return out.getvalue()


def test_a_change_reaches_a_second_worker_without_a_search(api, lfw, settings, engine):
    second, stop = start_worker(settings, engine, instance="worker-2")
    try:
        workers = [api.worker.gallery, second.gallery]
        for worker in workers:
            worker.index.sync(worker.gallery)
        enroll(api, "Hans Blix", [photo(lfw, "Hans_Blix", 0)])
        version = api.app.state.hub.gallery.version()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(w.index.version != version for w in workers):
            time.sleep(0.05)
        assert [w.index.version for w in workers] == [version, version]
        assert [w.index.subjects for w in workers] == [1, 1]
    finally:
        stop()


def test_an_import_from_another_model_re_embeds_kept_photos(settings, engine, lfw):
    """With enrolment photos kept, a gallery made with another model is re-embedded on import."""
    from tests.conftest import make_settings

    redis_port = int(settings.redis.url.rsplit(":", 1)[1].split("/")[0])
    mqtt_port = int(settings.mqtt.url.rsplit(":", 1)[1])
    keeping = make_settings(settings.paths.state_dir.parent, redis_port, mqtt_port,
                            FACEMATCH_GALLERY__STORE_ENROLLMENT_IMAGES="true")  # fmt: skip
    clear_gallery(keeping.redis.url)
    _, stop = start_worker(keeping, engine)
    client = hub_client(keeping)
    try:
        wait_for_inference(client, routes=GALLERY_ROUTES)
        sid = enroll(client, "Hans Blix", [photo(lfw, "Hans_Blix", 0)])["subject_id"]
        assert client.get(f"/subjects/{sid}").json()["subject"]["face_list"][0]["has_image"]
        exported = client.get("/gallery/export").content
        clear_gallery(keeping.redis.url)
        archive = rewrite_model(exported, "sface-2021dec-flip", "other-model-v1")
        report = client.post("/gallery/import", content=archive).json()
        assert report["reembedded"] == {sid: 1} and report["needs_new_photos"] == []
        found = client.post("/identify", json={"image": photo(lfw, "Hans_Blix", 2)}).json()
        assert found["outcome"] == "identified" and found["subject"]["subject_id"] == sid
    finally:
        client.__exit__(None, None, None)
        stop()


def test_a_person_left_by_a_hub_that_died_mid_enrolment_is_erased_when_a_hub_starts(api, lfw, settings, monkeypatch):
    import redis

    from edge.store import Store, keys
    from edge.store.gallery import Gallery

    enrolled = enroll(api, "Colin Powell", [photo(lfw, "Colin_Powell", 0)])["subject_id"]
    with redis.Redis.from_url(settings.redis.url) as client:
        assert client.zcard(keys.subjects_pending()) == 0  # a finished enrolment is not pending
    store = Store(settings.redis.url)
    abandoned = Gallery(store).create_subject("Half Enrolled", pending=True)  # as a hub killed before the photos
    store.close()
    monkeypatch.setattr("hub.state.PENDING_ENROLMENT_SECONDS", 0.0)  # old enough to be sure (600 s in production)
    restarted = hub_client(settings)
    try:
        listed = {s["subject_id"] for s in restarted.get("/subjects").json()["subjects"]}
        assert listed == {enrolled} and abandoned not in listed
    finally:
        restarted.__exit__(None, None, None)
