"""The liveness endpoints, API keys, limits and sessions through the real hub, broker, Redis and inference worker."""

import itertools
import subprocess
import time

import httpx
import pytest

from edge.liveness.challenge import SEQUENCES
from tests.conftest import backdate, hub_client, wait_for_inference


def initiate(client, **body):
    response = client.post("/initiate-liveness", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def submit(client, session_id, video_bytes, name="challenge.webm", *, early=False):
    if not early:
        backdate(client, session_id)
    return client.post(
        "/submit-liveness", data={"session_id": session_id}, files={"video": (name, video_bytes, "video/webm")}
    )


def test_initiate_returns_the_seed_shape(api):
    body = initiate(api)
    assert body["success"] and tuple(body["sequence"]) in SEQUENCES
    assert body["area_duration"] == 3.0 and "3 seconds" in body["instructions"]
    # Each window's length is drawn around area_duration; the schedule says when each cell is lit.
    schedule = body["schedule"]
    assert [w["cell"] for w in schedule] == body["sequence"] and schedule[0]["start"] == 0
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(schedule))
    assert all(2.4 - 1e-9 <= w["end"] - w["start"] <= 3.6 + 1e-9 for w in schedule)
    assert body["total_duration"] == pytest.approx(schedule[-1]["end"])
    assert len(body["session_id"]) == 36 and body["expires_in"] == 300
    custom = initiate(api, area_duration=2.5)
    assert custom["area_duration"] == 2.5 and 6.0 - 1e-9 <= custom["total_duration"] <= 9.0 + 1e-9
    assert custom["session_id"] != body["session_id"]


@pytest.mark.parametrize("duration", [0.5, 10.5, "slow"])
def test_area_duration_is_bounded(api, duration):
    response = api.post("/initiate-liveness", json={"area_duration": duration})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_submit_scores_a_real_video_and_cleans_up(api, settings, challenge_video):
    session = initiate(api)
    response = submit(api, session["session_id"], challenge_video.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] and body["session_id"] == session["session_id"] and body["result"] in ("pass", "fail")
    assert [a["area"] for a in body["sequence_results"]] == session["sequence"]
    assert all({"frames_used", "accuracy", "passed"} <= set(a) for a in body["sequence_results"])
    assert 0 <= body["overall_accuracy"] <= 1 and body["frames_processed"] > 60
    assert (body["result"] == "pass") == (body["reasons"] == [])
    assert body["anti_spoofing"]["checked"] and body["anti_spoofing"]["frames_scored"] >= 5
    assert body["anti_spoofing"]["screen_pattern"] is not None  # every cue's figure reaches the client
    assert {"picture_motion", "planar_motion_ratio", "blinks"} <= set(body["anti_spoofing"])
    assert body["processing_time"] > 0
    assert list((settings.paths.state_dir / "spool").iterdir()) == []  # the upload is gone
    # Single use: the same session cannot be scored twice.
    again = submit(api, session["session_id"], challenge_video.read_bytes())
    assert again.status_code == 409 and again.json()["error"]["code"] == "session_used"


def test_unknown_and_expired_sessions_are_404(api, settings, challenge_video):
    response = submit(api, "00000000-0000-4000-8000-000000000000", b"x")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_session"
    session = initiate(api)
    api.app.state.hub.store._redis.pexpire(f"fm:session:{session['session_id']}", 1)
    time.sleep(0.05)
    response = submit(api, session["session_id"], challenge_video.read_bytes())
    assert response.status_code == 404


def test_a_session_belongs_to_the_key_that_opened_it(api, settings, challenge_video):
    session = initiate(api)
    other = hub_client(settings)  # a second key
    try:
        response = submit(other, session["session_id"], challenge_video.read_bytes())
        assert response.status_code == 403 and response.json()["error"]["code"] == "session_not_yours"
    finally:
        other.__exit__(None, None, None)
    # ...and the owner can still use it: nothing was lost.
    assert submit(api, session["session_id"], challenge_video.read_bytes()).status_code == 200


def test_a_video_that_was_never_scored_leaves_the_session_usable(api, challenge_video):
    session = initiate(api)
    broken = submit(api, session["session_id"], b"this is not a video at all" * 100)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_video"
    assert api.app.state.hub.store.get_session(session["session_id"])["state"] == "pending"
    retry = submit(api, session["session_id"], challenge_video.read_bytes())  # used to be 409
    assert retry.status_code == 200, retry.text
    body = retry.json()
    # A fail names its reasons, each with what to do next.
    if body["result"] == "pass":
        assert not body["reasons"]
    else:
        assert body["reasons"] and all(r["hint"] for r in body["reasons"])
    assert submit(api, session["session_id"], challenge_video.read_bytes()).status_code == 409  # scored: used up


def test_a_video_sent_before_the_challenge_could_be_shown_is_refused_and_the_session_kept(api, challenge_video):
    session = initiate(api)
    response = submit(api, session["session_id"], challenge_video.read_bytes(), early=True)
    assert response.status_code == 425 and response.json()["error"]["code"] == "submitted_too_early"
    assert api.app.state.hub.store.get_session(session["session_id"])["state"] == "pending"
    assert submit(api, session["session_id"], challenge_video.read_bytes()).status_code == 200  # in due time


def test_broken_and_empty_uploads_are_400(api):
    session = initiate(api)
    response = submit(api, session["session_id"], b"")
    assert response.status_code == 400 and response.json()["error"]["code"] == "empty_video"
    response = submit(api, session["session_id"], b"this is not a video at all" * 100)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_video"


def test_oversized_video_is_413_and_keeps_the_session(settings, inference_worker, challenge_video):
    settings.http.max_video_size = 20_000
    client = hub_client(settings)
    try:
        wait_for_inference(client)
        session = initiate(client)
        response = submit(client, session["session_id"], challenge_video.read_bytes())
        assert response.status_code == 413
        assert response.json()["error"]["code"] in ("video_too_large", "body_too_large")
        state = client.app.state.hub.store.get_session(session["session_id"])["state"]
        assert state == "pending"
    finally:
        client.__exit__(None, None, None)


def test_api_keys_are_required_except_for_health_and_the_page(settings):
    client = hub_client(settings, key=None)
    try:
        assert client.get("/health").status_code in (200, 503)
        assert client.get("/").status_code == 200 and "Liveness check" in client.get("/").text
        assert client.get("/static/index.html").status_code == 200
        assert client.get("/static/app.js").status_code == 200
        for path in ("/initiate-liveness", "/match"):
            response = client.post(path, json={})
            assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"
        response = client.post("/initiate-liveness", json={}, headers={"X-API-Key": "fm_wrong"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    finally:
        client.__exit__(None, None, None)


def test_keys_from_the_environment(settings, monkeypatch):
    monkeypatch.setenv("FACEMATCH_API_KEYS", "automation-key-1, automation-key-2")
    client = hub_client(settings, key="automation-key-2")
    try:
        assert client.post("/initiate-liveness", json={}).status_code == 200
    finally:
        client.__exit__(None, None, None)


def test_rate_limit_answers_429_with_retry_after(settings):
    settings.api.rate_limit_per_key = "3/minute"
    client = hub_client(settings)
    try:
        codes = [client.post("/initiate-liveness", json={}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        response = client.post("/initiate-liveness", json={})
        assert response.json()["error"]["code"] == "rate_limited" and int(response.headers["Retry-After"]) >= 1
    finally:
        client.__exit__(None, None, None)


def test_cors_is_off_by_default_and_configurable(settings):
    preflight = {"Origin": "https://door.example", "Access-Control-Request-Method": "POST"}
    client = hub_client(settings)
    try:
        assert "access-control-allow-origin" not in client.options("/match", headers=preflight).headers
    finally:
        client.__exit__(None, None, None)
    settings.api.cors_origins = ["https://door.example"]
    client = hub_client(settings)
    try:
        response = client.options("/match", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://door.example"
    finally:
        client.__exit__(None, None, None)


def test_inference_down_is_503_and_the_session_survives(settings, challenge_video):
    client = hub_client(settings)
    try:
        session = initiate(client)
        response = submit(client, session["session_id"], challenge_video.read_bytes())
        assert response.status_code == 503 and response.json()["error"]["dependency"] == "inference"
        assert client.app.state.hub.store.get_session(session["session_id"])["state"] == "pending"
    finally:
        client.__exit__(None, None, None)


def test_redis_down_is_503_naming_it(tmp_path, mqtt_broker):
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, 1, mqtt_broker.port)
    client = hub_client(settings)
    try:
        response = client.post("/initiate-liveness", json={})
        assert response.status_code == 503 and response.json()["error"]["dependency"] == "redis"
    finally:
        client.__exit__(None, None, None)


def test_openapi_documents_the_endpoints(api):
    spec = api.get("/openapi.json").json()
    for path in ("/match", "/initiate-liveness", "/submit-liveness", "/health"):
        assert path in spec["paths"]
    assert api.get("/docs").status_code == 200


def test_the_seed_programmatic_example_against_facematch_up(up_stack, challenge_video):
    """The seed's example (plus the API key header): initiate, then submit a recorded video."""
    url, key = up_stack
    challenge = httpx.post(f"{url}/initiate-liveness", json={"area_duration": 3.0}, headers={"X-API-Key": key}).json()
    assert len(challenge["sequence"]) == 3
    time.sleep(challenge["total_duration"])  # the recording takes as long as the challenge
    files = {"video": ("challenge.webm", challenge_video.read_bytes(), "video/webm")}
    data = {"session_id": challenge["session_id"]}
    result = httpx.post(f"{url}/submit-liveness", files=files, data=data, headers={"X-API-Key": key}, timeout=60).json()
    assert result["success"] and result["result"] in ("pass", "fail") and result["processing_time"] > 0


# The middle half of two recordings side by side: two faces at full size in one 640x480 frame.
SIDE_BY_SIDE = "[0:v]crop=320:480:160:0[a];[1:v]crop=320:480:160:0[b];[a][b]hstack"


@pytest.fixture(scope="module")
def bad_videos(data_dir, challenge_video, tmp_path_factory):
    """Videos that are not a try at a challenge, made with ffmpeg from real recordings and test patterns."""
    folder = tmp_path_factory.mktemp("bad-videos")
    source = data_dir / "gaze/eyegaze/both/game_video_1738773752.mp4"
    other = data_dir / "gaze/eyegaze/horizontal/game_video_1738772966.mp4"

    def ffmpeg(name, *args):
        target = folder / name
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(target)], check=True)
        return target.read_bytes()

    return {
        "audio only": (ffmpeg("audio.webm", "-f", "lavfi", "-i", "sine=frequency=440:duration=10", "-c:a", "libopus"),
                       {"invalid_video"}),
        "corrupt": (challenge_video.read_bytes()[:30_000], {"invalid_video", "video_too_short"}),
        "too short": (ffmpeg("short.webm", "-ss", "5", "-t", "3", "-i", str(source), "-an", "-c:v", "libvpx"),
                      {"video_too_short"}),
        "no face": (ffmpeg("pattern.webm", "-f", "lavfi", "-i", "testsrc=duration=11.5:size=640x480:rate=30",
                           "-c:v", "libvpx"), {"no_face"}),
        # Edited timestamps: a 2 s jump in the middle (a segment moved into another window), and a 2.9 s clip
        # stretched to fill the challenge (3.75 frames a second). Every clip but "too short" outlasts the longest
        # drawn challenge (10.8 s), so that the length check never answers first.
        "time jump": (ffmpeg("jump.webm", "-ss", "5", "-t", "10", "-i", str(source), "-an", "-vf",
                             "setpts='if(gte(T,4),PTS+2/TB,PTS)'", "-fps_mode", "passthrough", "-c:v", "libvpx"),
                      {"video_timing"}),
        "stretched": (ffmpeg("stretched.webm", "-ss", "5", "-t", "2.9", "-i", str(source), "-an", "-vf",
                             "setpts=4*PTS,fps=3.75", "-c:v", "libvpx"), {"video_timing"}),
        "two faces": (ffmpeg("two.webm", "-ss", "5", "-t", "11.5", "-i", str(source), "-ss", "5", "-t", "11.5", "-i",
                             str(other), "-filter_complex", SIDE_BY_SIDE, "-an", "-c:v", "libvpx"),
                      {"multiple_faces"}),
    }  # fmt: skip


@pytest.mark.parametrize(
    "kind", ["audio only", "corrupt", "too short", "no face", "two faces", "time jump", "stretched"]
)
def test_a_video_that_is_no_try_at_the_challenge_is_a_precise_4xx_and_keeps_the_session(api, bad_videos, kind):
    video, codes = bad_videos[kind]
    session = initiate(api)
    response = submit(api, session["session_id"], video)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] in codes, response.text
    assert api.app.state.hub.store.get_session(session["session_id"])["state"] == "pending"


def test_health_answers_at_once_while_videos_are_scored(api, challenge_video):
    """Health used to queue behind scoring in the worker's lanes: 503 under 6 concurrent uploads."""
    from concurrent.futures import ThreadPoolExecutor

    sessions = [initiate(api)["session_id"] for _ in range(3)]
    for session in sessions:
        backdate(api, session)
    video = challenge_video.read_bytes()
    with ThreadPoolExecutor(3) as uploads:
        scored = [uploads.submit(submit, api, session, video) for session in sessions]
        time.sleep(0.8)  # both request lanes busy, one video waiting
        assert not all(f.done() for f in scored)
        started = time.monotonic()
        health = api.get("/health")
        assert health.status_code == 200 and time.monotonic() - started < 1.0
        assert all(f.result(timeout=60).status_code == 200 for f in scored)
