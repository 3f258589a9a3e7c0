"""Streamed challenge videos (the web page's way): chunks bound to the session, scored as they arrive, the verdict
ready at the end; every rule of the whole-file upload still holds."""

import time

from edge.inference.liveness import score_video
from edge.store import keys
from models import model_path
from tests.conftest import backdate, hub_client, wait_for_inference
from tests.test_liveness_api import initiate

CHUNK = 64 * 1024


def chunks_of(video: bytes, size: int = CHUNK) -> list[bytes]:
    return [video[i : i + size] for i in range(0, len(video), size)]


def send(client, session_id: str, index: int, chunk: bytes):
    return client.post(f"/submit-liveness/stream/{session_id}", params={"index": index}, content=chunk)


def end(client, session_id: str):
    return client.post(f"/submit-liveness/stream/{session_id}/end")


def stream_all(client, session_id: str, video: bytes) -> None:
    for index, chunk in enumerate(chunks_of(video)):
        response = send(client, session_id, index, chunk)
        assert response.status_code == 200, response.text
        assert response.json()["index"] == index


def session_state(client, session_id: str) -> str | None:
    import json

    raw = client.app.state.hub.store.client.get(keys.session(session_id))
    return None if raw is None else json.loads(raw)["state"]


def test_a_streamed_video_gets_the_verdict_of_the_whole_file(api, settings, engine, challenge_video):
    session = initiate(api)
    video = challenge_video.read_bytes()
    backdate(api, session["session_id"])  # as if the challenge had been shown while these chunks were recorded
    stream_all(api, session["session_id"], video)
    assert session_state(api, session["session_id"]) == "submitted"  # the first chunk claimed it
    response = end(api, session["session_id"])
    assert response.status_code == 200, response.text
    streamed = response.json()
    assert streamed["session_id"] == session["session_id"] and streamed["result"] in ("pass", "fail")
    assert streamed["processing_time"] > 0
    # Scored from the growing file exactly as the whole file is scored: the same frames, the same verdict.
    durations = [w["end"] - w["start"] for w in session["schedule"]]
    from edge.inference.liveness import scoring_params

    params, presentation = scoring_params(settings.liveness)
    whole = score_video(
        challenge_video, session["sequence"], session["area_duration"],
        model_path(settings.models.dir, "face_landmarker"), params, engine, presentation, durations,
    ).model_dump()  # fmt: skip
    for field in ("result", "overall_accuracy", "sequence_results", "reasons", "frames_processed", "video_seconds"):
        assert streamed[field] == whole[field], field
    assert streamed["anti_spoofing"]["live_probability"] == whole["anti_spoofing"]["live_probability"]
    assert session_state(api, session["session_id"]) == "completed"
    assert list((settings.paths.state_dir / "spool").iterdir()) == []  # nothing left behind
    # Single use, whichever way it is tried again.
    assert send(api, session["session_id"], 0, b"x").json()["error"]["code"] == "session_used"
    again = api.post("/submit-liveness", data={"session_id": session["session_id"]},
                     files={"video": ("c.webm", video, "video/webm")})  # fmt: skip
    assert again.status_code == 409 and again.json()["error"]["code"] == "session_used"


def test_chunks_come_in_order_from_the_session_owner(api, settings, challenge_video):
    session = initiate(api)
    sid = session["session_id"]
    pieces = chunks_of(challenge_video.read_bytes())
    first = send(api, sid, 1, pieces[1])
    assert first.status_code == 409 and first.json()["error"]["code"] == "stream_out_of_order"
    assert session_state(api, sid) == "pending"  # a refused chunk claims nothing
    assert send(api, sid, 0, pieces[0]).status_code == 200
    skipped = send(api, sid, 2, pieces[2])
    assert skipped.status_code == 409 and "expected chunk 1" in skipped.json()["error"]["message"]
    repeated = send(api, sid, 0, pieces[0])
    assert repeated.status_code == 409
    assert send(api, sid, 1, pieces[1]).status_code == 200
    # Another client cannot add to it or end it.
    other = hub_client(settings)
    try:
        assert send(other, sid, 2, pieces[2]).json()["error"]["code"] == "session_not_yours"
        assert end(other, sid).json()["error"]["code"] == "session_not_yours"
    finally:
        other.__exit__(None, None, None)
    unknown = send(api, "00000000-0000-4000-8000-000000000000", 0, pieces[0])
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_session"
    bad_index = api.post(f"/submit-liveness/stream/{sid}", params={"index": -1}, content=b"x")
    assert bad_index.status_code == 422


def test_an_end_before_the_challenge_could_be_shown_gives_the_session_back(api, challenge_video):
    session = initiate(api)
    sid = session["session_id"]
    none_yet = end(api, sid)
    assert none_yet.status_code == 409 and none_yet.json()["error"]["code"] == "stream_out_of_order"
    stream_all(api, sid, challenge_video.read_bytes()[: 4 * CHUNK])
    early = end(api, sid)  # a recording made in advance, sent at once
    assert early.status_code == 425 and early.json()["error"]["code"] == "submitted_too_early"
    assert session_state(api, sid) == "pending"  # usable again, as for a whole file sent too early


def test_an_oversized_stream_is_cut_and_the_session_given_back(settings, inference_worker):
    small = settings.model_copy(update={"http": settings.http.model_copy(update={"max_video_size": 200_000})})
    client = hub_client(small)
    try:
        wait_for_inference(client)
        sid = initiate(client)["session_id"]
        for index in range(3):
            assert send(client, sid, index, b"\0" * 60_000).status_code == 200
        over = send(client, sid, 3, b"\0" * 60_000)
        assert over.status_code == 413 and over.json()["error"]["code"] == "video_too_large"
        assert session_state(client, sid) == "pending"
        assert send(client, sid, 4, b"x").json()["error"]["code"] == "stream_out_of_order"  # that stream is over
        assert list((small.paths.state_dir / "spool").iterdir()) == []
    finally:
        client.__exit__(None, None, None)


def test_an_undecodable_stream_is_refused_and_the_session_given_back(api, settings):
    sid = initiate(api)["session_id"]
    backdate(api, sid)
    for index in range(3):
        assert send(api, sid, index, bytes(range(256)) * 64).status_code == 200
    response = end(api, sid)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_video"
    assert session_state(api, sid) == "pending"
    assert list((settings.paths.state_dir / "spool").iterdir()) == []


def test_a_stream_that_stops_arriving_is_refused_as_stalled(api, settings, challenge_video):
    from edge.inference.service import STREAM_IDLE_SECONDS

    sid = initiate(api)["session_id"]
    pieces = chunks_of(challenge_video.read_bytes())
    for index in range(8):  # a couple of seconds of video, then the page is gone
        assert send(api, sid, index, pieces[index]).status_code == 200
    scoring = api.app.state.hub.streams.active[sid].scoring
    deadline = time.monotonic() + STREAM_IDLE_SECONDS + 20
    while not scoring.done():  # the worker waits STREAM_IDLE_SECONDS for more, then gives up
        assert time.monotonic() < deadline, "the stalled stream was never given up"
        time.sleep(0.2)
    response = send(api, sid, 8, pieces[8])  # the page comes back too late: told so at once
    body = response.json()
    assert response.status_code == 400 and body["error"]["code"] == "stream_stalled", body
    assert session_state(api, sid) == "pending"
    assert list((settings.paths.state_dir / "spool").iterdir()) == []
