"""POST /match through the real hub, a real broker and a real inference worker with real models."""

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.bus import Bus, Component, RpcMethod
from tests.conftest import hub_client, wait_for_inference

EXAMPLES = "face_recognition/examples"


def b64(path, prefix=False):
    text = base64.b64encode(path.read_bytes()).decode()
    return f"data:image/jpeg;base64,{text}" if prefix else text


def test_same_person_matches(api, faces_dir):
    photos = faces_dir / EXAMPLES
    response = api.post(
        "/match", json={"image1": b64(photos / "obama.jpg"), "image2": b64(photos / "obama2.jpg", True)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] and body["match"] is True and body["similarity_score"] >= 0.6
    assert body["threshold"] == 0.6 and body["processing_time"] > 0 and "details" not in body


def test_different_people_do_not_match_and_verbose_explains(api, faces_dir):
    photos = faces_dir / EXAMPLES
    body = api.post(
        "/match", json={"image1": b64(photos / "obama.jpg"), "image2": b64(photos / "biden.jpg"), "verbose": True}
    ).json()
    assert body["match"] is False and body["similarity_score"] < 0.6
    details = body["details"]
    assert details["image1"]["face"]["box"] and details["image2"]["quality"]["ok"] is True
    assert -1 <= details["cosine_similarity"] <= 1 and details["false_match_rate_at_threshold"] == pytest.approx(1e-3)
    assert details["image1"]["timings_ms"]["embed"] > 0
    assert set(body["liveness"]) == {"image1", "image2"}
    assert 0 <= details["image2"]["liveness"]["live_probability"] <= 1


def test_threshold_is_honoured(api, faces_dir):
    photos = faces_dir / EXAMPLES
    body = api.post(
        "/match", json={"image1": b64(photos / "obama.jpg"), "image2": b64(photos / "obama2.jpg"), "threshold": 1.0}
    ).json()
    assert body["threshold"] == 1.0 and body["match"] is (body["similarity_score"] >= 1.0)


def test_several_faces_use_the_largest_and_say_so(api, faces_dir):
    photos = faces_dir / EXAMPLES
    body = api.post(
        "/match", json={"image1": b64(photos / "two_people.jpg"), "image2": b64(photos / "obama.jpg")}
    ).json()
    assert body["success"] and any("image1" in w and "largest" in w for w in body["warnings"])


def test_no_face_is_422_naming_the_image(api, faces_dir):
    no_face = faces_dir / "insightface/cpp-package/inspireface/test_res/data/crop/no_face.png"
    response = api.post("/match", json={"image1": b64(faces_dir / EXAMPLES / "obama.jpg"), "image2": b64(no_face)})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "no_face" and error["image"] == "image2" and "image2" in error["message"]


def test_poor_quality_is_422_with_the_reason(api, faces_dir):
    side = faces_dir / "insightface/cpp-package/inspireface/test_res/data/pose/left_face.jpeg"
    response = api.post("/match", json={"image1": b64(side), "image2": b64(faces_dir / EXAMPLES / "obama.jpg")})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "poor_quality" and error["image"] == "image1"
    assert [r["code"] for r in error["quality"]["reasons"]] == ["pose_not_frontal"]


@pytest.mark.parametrize(
    ("image", "status", "code"),
    [
        ("!!!not base64!!!", 400, "invalid_base64"),
        (base64.b64encode(b"plain text, not a picture").decode(), 400, "invalid_image"),
        ("", 400, "empty_image"),
        ("ftp://example.com/a.jpg", 400, "unsupported_url_scheme"),
        ("file:///etc/passwd", 400, "unsupported_url_scheme"),
        ("http://127.0.0.1:9/face.jpg", 400, "url_not_allowed"),
        ("http://localhost/face.jpg", 400, "url_not_allowed"),
        ("http://[::1]/face.jpg", 400, "url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data", 400, "url_not_allowed"),
        ("http://10.1.2.3/face.jpg", 400, "url_not_allowed"),
    ],
)
def test_bad_inputs_are_4xx_naming_the_image(api, faces_dir, image, status, code):
    response = api.post("/match", json={"image1": b64(faces_dir / EXAMPLES / "obama.jpg"), "image2": image})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["image"] == "image2"


def test_oversized_image_is_413(settings, inference_worker):
    settings.http.max_image_size = 2048
    client = hub_client(settings)
    try:
        wait_for_inference(client)
        big = base64.b64encode(bytes(4096)).decode()
        response = client.post("/match", json={"image1": big, "image2": big})
        assert response.status_code == 413
        assert response.json()["error"]["code"] in ("image_too_large", "body_too_large")
        huge = "A" * 100_000  # over the body limit: 2 base64 images of 2 KB + 64 KB of JSON
        response = client.post("/match", json={"image1": huge, "image2": huge})
        assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    finally:
        client.__exit__(None, None, None)


def test_malformed_requests_are_422_with_a_json_body(api):
    response = api.post("/match", json={"image1": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request" and "image2" in response.json()["error"]["message"]
    response = api.post("/match", json={"image1": "x", "image2": "y", "threshold": 2})
    assert response.status_code == 422
    response = api.post("/match", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


class ImageServer:
    """A tiny HTTP server on loopback: /face.jpg, /redirect-to?url, /big, /not-an-image.jpg (text sent as a JPEG)."""

    def __init__(self, image: bytes, host: str = "127.0.0.1"):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/face.jpg":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(image)))
                    self.end_headers()
                    self.wfile.write(image)
                elif self.path == "/not-an-image.jpg":
                    body = b"<html>an error page served as image/jpeg</html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/big.jpg":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 * len(image)))
                    self.end_headers()
                    self.wfile.write(image * 10)
                elif self.path == "/slow.jpg":
                    time.sleep(3)
                    self.send_response(200)
                    self.end_headers()
                elif self.path == "/loop":
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.end_headers()
                elif self.path.startswith("/redirect-to?"):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("?", 1)[1])
                    self.end_headers()
                else:
                    self.send_response(404)
                    self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        outer.server = self.server

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_urls_in_an_allowed_network_are_fetched_and_redirects_rechecked(settings, inference_worker, faces_dir):
    photo = (faces_dir / EXAMPLES / "obama.jpg").read_bytes()
    allowed = ImageServer(photo, "127.0.0.1")
    forbidden = ImageServer(photo, "127.0.0.2")
    settings.http.url_allow_networks = ["127.0.0.1/32"]
    settings.http.max_image_size = 2 * len(photo)
    second = b64(faces_dir / EXAMPLES / "obama2.jpg")
    settings.http.request_timeout = 2.0
    client = hub_client(settings)
    try:
        wait_for_inference(client)
        body = client.post(
            "/match", json={"image1": f"{allowed.url}/face.jpg", "image2": b64(faces_dir / EXAMPLES / "obama2.jpg")}
        ).json()
        assert body["success"] and body["match"]
        # A redirect from the allowed server to a refused address is checked like the first hop.
        response = client.post(
            "/match",
            json={
                "image1": f"{allowed.url}/redirect-to?{forbidden.url}/face.jpg",
                "image2": b64(faces_dir / EXAMPLES / "obama2.jpg"),
            },
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "url_not_allowed"
        for path, status, code in [
            ("/big.jpg", 413, "image_too_large"),
            ("/not-an-image.jpg", 400, "invalid_image"),
            ("/loop", 400, "too_many_redirects"),
            ("/slow.jpg", 400, "url_timeout"),
        ]:
            response = client.post("/match", json={"image1": f"{allowed.url}{path}", "image2": second})
            assert response.status_code == status, path
            assert response.json()["error"]["code"] == code and response.json()["error"]["image"] == "image1"
        response = client.post("/match", json={"image1": f"{allowed.url}/missing.jpg", "image2": "x"})
        assert response.status_code == 400 and response.json()["error"]["code"] in (
            "url_fetch_failed",
            "invalid_base64",
        )
    finally:
        client.__exit__(None, None, None)
        allowed.close()
        forbidden.close()


def test_inference_not_running_is_503_naming_it(settings, faces_dir):
    client = hub_client(settings)
    try:
        photo = b64(faces_dir / EXAMPLES / "obama.jpg")
        started = time.monotonic()
        response = client.post("/match", json={"image1": photo, "image2": photo})
        assert response.status_code == 503 and time.monotonic() - started < 5
        error = response.json()["error"]
        assert error["code"] == "inference_unavailable" and error["dependency"] == "inference"
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["dependencies"]["inference"]["ok"] is False
    finally:
        client.__exit__(None, None, None)


def test_a_silent_worker_gives_504_not_a_hang(settings, faces_dir):
    # Online on the bus but never answering: the request must end with a timeout.
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    silent = Bus(settings, Component.INFERENCE, instance="silent")
    silent.serve(RpcMethod.MATCH, lambda request: time.sleep(3), pool)
    assert silent.start(wait=5)
    settings.http.request_timeout = 1.0
    client = hub_client(settings)
    try:
        wait_for_inference(client, routes=("match",))
        photo = b64(faces_dir / EXAMPLES / "obama.jpg")
        started = time.monotonic()
        response = client.post("/match", json={"image1": photo, "image2": photo})
        assert response.status_code == 504 and response.json()["error"]["code"] == "inference_timeout"
        assert time.monotonic() - started < 5
    finally:
        client.__exit__(None, None, None)
        silent.stop()
        pool.shutdown()


def test_broker_down_is_503_naming_it(tmp_path, redis_server, faces_dir):
    from edge.services import free_port
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, redis_server.port, free_port())
    client = hub_client(settings)
    try:
        photo = b64(faces_dir / EXAMPLES / "obama.jpg")
        response = client.post("/match", json={"image1": photo, "image2": photo})
        assert response.status_code == 503 and response.json()["error"]["dependency"] == "broker"
        health = client.get("/health").json()
        assert health["status"] == "unhealthy" and health["dependencies"]["broker"]["ok"] is False
    finally:
        client.__exit__(None, None, None)


def test_health_reports_models_when_everything_runs(api):
    response = api.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy"
    assert body["models"] == {
        "yunet": True,
        "sface-2021dec-flip": True,
        "mediapipe-face-landmarker": True,
        "minifasnet-v2+v1se": True,
    }
    assert all(dep["ok"] for dep in body["dependencies"].values())
    # What each model really runs on (this machine has no GPU: ONNX Runtime's CPU provider).
    assert body["dependencies"]["inference"]["runs_on"] == {
        "detector": "OpenCV DNN (CPU)",
        "embedding": "ONNX Runtime (CPUExecutionProvider)",
        "antispoofing": "ONNX Runtime (CPUExecutionProvider)",
        "eye_tracker": "MediaPipe (CPU, XNNPACK)",
    }
