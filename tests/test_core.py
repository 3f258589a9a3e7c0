"""The core contract: daemon lifecycle, error catalogue, credentials that take effect at once, shared rate limits,
offline docs, clear messages, configuration by one rule, and the CLI's own words."""

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from edge.config import load_settings
from edge.errors import ErrorCode, catalogue_markdown
from tests.conftest import PROJECT_ROOT, hub_client


def run_python(script: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter at the project's root; it must succeed."""
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


# -- the daemon lifecycle under a fake systemd ------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; ``messages()`` drains what arrived."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)

    def messages(seconds: float) -> list[str]:
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                got.append(sock.recv(4096).decode())
        return got

    yield path, messages
    sock.close()


def test_the_inference_daemon_says_ready_and_pings_the_watchdog(settings, model_settings, notify_socket):
    path, messages = notify_socket
    env = {
        **os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000", "MQTT_URL": settings.mqtt.url,
        "REDIS_URL": settings.redis.url, "DEVICE_ID": "notify-test",
    }  # fmt: skip
    daemon = subprocess.Popen([sys.executable, "-m", "edge.inference"], env=env, cwd=PROJECT_ROOT)
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(m.startswith("READY=1") for m in seen):
            seen += messages(1)
        ready = [m for m in seen if m.startswith("READY=1")]
        assert ready and "serving RPCs" in ready[0], seen
        assert sum(m == "WATCHDOG=1" for m in messages(2.5)) >= 3  # every half of WATCHDOG_USEC
        daemon.terminate()
        assert daemon.wait(30) == 0
        assert "STOPPING=1" in messages(0.5)
    finally:
        daemon.kill()


# Each component's module, and what it needs to start here (no camera, no door outputs, no screen).
COMPONENTS = {
    "camera": ("edge.camera", {"FACEMATCH_CAMERA__SOURCE": "none"}),
    "door": ("edge.door", {}),
    "display": ("display", {"SDL_VIDEODRIVER": "offscreen", "FACEMATCH_DISPLAY__FULLSCREEN": "false"}),
    "hub": ("hub", {}),
}


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_every_component_says_ready_pings_the_watchdog_and_says_stopping(component, settings, notify_socket,
                                                                          tmp_path):  # fmt: skip
    """What each unit's Type=notify and WatchdogSec rely on, for the units that do not load models."""
    from edge.services import free_port

    path, messages = notify_socket
    module, extra = COMPONENTS[component]
    env = {
        **os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000", "MQTT_URL": settings.mqtt.url,
        "REDIS_URL": settings.redis.url, "DEVICE_ID": "notify-test", "PORT": str(free_port()),
        "FACEMATCH_STATE_DIR": str(tmp_path), "FACEMATCH_API_KEYS": "notify-test-key", **extra,
    }  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=PROJECT_ROOT)
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(m.startswith("READY=1") for m in seen):
            seen += messages(0.5)
        assert any(m.startswith("READY=1") for m in seen), seen
        assert sum(m == "WATCHDOG=1" for m in messages(2.5)) >= 3
        process.terminate()
        assert process.wait(30) == 0
        assert "STOPPING=1" in messages(0.5)
    finally:
        process.kill()


def test_the_watchdog_stops_when_the_main_loop_hangs(notify_socket, monkeypatch):
    from edge.daemon import Daemon

    path, messages = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    daemon = Daemon("test", load_settings(environ={}))
    hang = threading.Event()
    release = threading.Event()

    def tick():
        if hang.is_set():
            release.wait(10)

    loop = threading.Thread(target=daemon.run, args=(tick,), daemon=True)
    loop.start()
    try:
        assert sum(m == "WATCHDOG=1" for m in messages(0.6)) >= 3
        hang.set()
        time.sleep(0.3)
        messages(0.1)  # what was in flight when it hung
        assert "WATCHDOG=1" not in messages(0.8)
    finally:
        release.set()
        daemon.stop_requested.set()
        loop.join(5)


def test_the_units_are_notify_services_with_a_watchdog():
    """Every long-running unit tells systemd when it is ready and pings a watchdog; a one-shot set-up unit (the bridge
    drop-in) runs once and stays "active" after."""
    units = sorted((PROJECT_ROOT / "systemd").glob("facematch*.service"))
    assert units
    for unit in units:
        text = unit.read_text()
        if "Type=oneshot" in text:
            assert "RemainAfterExit=yes" in text and "WatchdogSec=" not in text, unit.name
        else:
            assert "Type=notify" in text and "WatchdogSec=" in text, unit.name
    assert any("Type=notify" in unit.read_text() for unit in units)


# -- errors ---------------------------------------------------------------------------------------------------


def test_the_error_catalogue_in_the_docs_is_complete():
    docs = (PROJECT_ROOT / "docs" / "ERRORS.md").read_text()
    assert catalogue_markdown() in docs, "regenerate the table: python -c 'from edge.errors import *; ...'"


def test_every_code_the_code_raises_is_in_the_catalogue():
    import re

    known = {c.value for c in ErrorCode}
    for path in list((PROJECT_ROOT / "edge").rglob("*.py")) + list((PROJECT_ROOT / "hub").rglob("*.py")):
        for code in re.findall(r"ErrorCode\.([A-Z0-9_]+)", path.read_text()):
            assert getattr(ErrorCode, code).value in known, (path, code)
    for code in ("invalid_image", "empty_image", "image_too_large", "invalid_video"):  # from decoders' own codes
        assert code in known


def test_a_form_upload_to_match_is_told_json_is_expected(api):
    response = api.post("/match", data={"image1": "x", "image2": "y"})
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "json_expected" and "JSON" in error["message"]


def test_malformed_json_is_said_in_words(api):
    response = api.post("/match", content=b'{"image1": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "not valid JSON" in message and "0:" not in message and "JSON decode error" not in message


def test_an_image_that_is_not_one_is_described_without_python_reprs(api):
    junk = base64.b64encode(b"definitely not an image" * 10).decode()
    response = api.post("/match", json={"image1": junk, "image2": junk})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("image1: ") and "<" not in message and "BytesIO" not in message


def test_unexpected_paths_and_methods_answer_json(api):
    for response in (api.get("/nope"), api.get("/match")):
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["success"] is False


# -- credentials and limits -----------------------------------------------------------------------------------


def test_a_new_key_works_at_once_and_a_revoked_one_stops_at_once(settings):
    from hub.security import create_key, revoke_keys

    client = hub_client(settings, key=None)
    try:
        key = create_key(settings.api.keys_file, "late")  # made after the hub started
        assert client.post("/initiate-liveness", json={}, headers={"X-API-Key": key}).status_code == 200
        assert [e["name"] for e in revoke_keys(settings.api.keys_file, "late")] == ["late"]
        response = client.post("/initiate-liveness", json={}, headers={"X-API-Key": key})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    finally:
        client.__exit__(None, None, None)


def test_keys_revoke_from_the_command_line(settings, monkeypatch, capsys):
    from edge.cli import main
    from hub.security import create_key

    monkeypatch.setenv("FACEMATCH_API_KEYS_FILE", str(settings.api.keys_file))
    create_key(settings.api.keys_file, "door-tablet")
    assert main(["keys", "revoke", "door-tablet"]) == 0
    assert "revoked door-tablet" in capsys.readouterr().out
    assert main(["keys", "revoke", "door-tablet"]) == 1


def test_the_per_address_limit_counts_each_request_once(settings):
    settings.api.rate_limit_per_address = "4/minute"
    client = hub_client(settings)
    try:
        codes = [client.post("/initiate-liveness", json={}).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 200, 429]  # a limit of 4 used to let 2 through
    finally:
        client.__exit__(None, None, None)


def test_rate_limits_are_shared_by_several_hub_processes(settings):
    from hub.security import create_key

    settings.api.rate_limit_per_key = "3/minute"
    key = create_key(settings.api.keys_file, "shared")
    first = hub_client(settings, key=key)
    second = hub_client(settings, key=None)
    try:
        second.headers["X-API-Key"] = key
        codes = [c.post("/initiate-liveness", json={}).status_code for c in (first, second, first, second)]
        assert codes == [200, 200, 200, 429]
    finally:
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)


def test_page_tokens_run_liveness_only_and_expire(settings):
    client = hub_client(settings)
    try:
        issued = client.post("/page-tokens", json={"hours": 1}).json()
        assert issued["url"].endswith(f"/#token={issued['token']}") and issued["expires_in"] == 3600
        page = {"X-API-Key": "", "X-Page-Token": issued["token"]}
        assert client.post("/initiate-liveness", json={}, headers=page).status_code == 200
        forbidden = client.post("/match", json={"image1": "a", "image2": "b"}, headers=page)
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
        assert client.post("/page-tokens", json={}, headers=page).status_code == 403
        hub = client.app.state.hub
        from edge.store.keys import page_token
        from hub.security import hash_key

        hub.store.client.delete(page_token(hash_key(issued["token"])))  # as its TTL would
        expired = client.post("/initiate-liveness", json={}, headers=page)
        assert expired.status_code == 401 and expired.json()["error"]["code"] == "invalid_page_token"
    finally:
        client.__exit__(None, None, None)


def test_api_docs_are_served_from_the_device(api):
    html = api.get("/docs").text
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    import re

    assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', html)
    assert assets and all(api.get(asset).status_code == 200 for asset in assets)
    redoc = api.get("/redoc").text
    redoc_assets = re.findall(r'src="(/[^"]+\.js)"', redoc)
    assert redoc_assets and all(api.get(asset).status_code == 200 for asset in redoc_assets)


def test_liveness_is_503_at_once_when_no_worker_on_this_host_serves_it(settings):
    from concurrent.futures import ThreadPoolExecutor

    from edge.bus import Bus, Component, RpcMethod

    pool = ThreadPoolExecutor(1)
    elsewhere = Bus(settings.model_copy(update={"host_id": "elsewhere"}), Component.INFERENCE, instance="elsewhere")
    elsewhere.serve(RpcMethod.LIVENESS, lambda request: None, pool)
    elsewhere.serve(RpcMethod.MATCH, lambda request: None, pool)
    assert elsewhere.start(wait=5)
    client = hub_client(settings)
    try:
        assert client.app.state.hub.presence.wait_until(lambda p: p.serves("liveness/elsewhere"), 5)
        session = client.post("/initiate-liveness", json={}).json()
        started = time.monotonic()
        response = client.post("/submit-liveness", data={"session_id": session["session_id"]},
                               files={"video": ("v.webm", b"x" * 1000, "video/webm")})  # fmt: skip
        assert response.status_code == 503 and time.monotonic() - started < 1
        error = response.json()["error"]
        assert error["code"] == "inference_unavailable" and "on this host" in error["message"]
    finally:
        client.__exit__(None, None, None)
        elsewhere.stop()
        pool.shutdown()


# -- configuration --------------------------------------------------------------------------------------------


def test_every_key_can_be_set_by_one_generic_rule():
    settings = load_settings(environ={
        "FACEMATCH_HTTP__PORT": "9100", "FACEMATCH_LIVENESS__SCREEN_PATTERN_THRESHOLD": "2.5",
        "FACEMATCH_MQTT__KEEPALIVE": "45", "FACEMATCH_HTTP__URL_ALLOW_NETWORKS": '["10.1.0.0/16"]',
        "FACEMATCH_LOG_LEVEL": "debug",
    })  # fmt: skip
    assert settings.http.port == 9100 and settings.liveness.screen_pattern_threshold == 2.5
    assert settings.mqtt.keepalive == 45 and settings.http.url_allow_networks == ["10.1.0.0/16"]
    assert settings.log_level == "DEBUG"
    # The seed's flat names stay, and win over the generic rule.
    assert load_settings(environ={"PORT": "9200", "FACEMATCH_HTTP__PORT": "9100"}).http.port == 9200


def test_a_bad_generic_variable_is_one_line_naming_key_value_and_origin():
    from edge.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FACEMATCH_MQTT__KEEPALIVE": "forever"})
    assert str(info.value).startswith("config error: mqtt.keepalive = 'forever' (from FACEMATCH_MQTT__KEEPALIVE)")
    with pytest.raises(ConfigError, match=r"unknown key http\.prot \(from FACEMATCH_HTTP__PROT\)"):
        load_settings(environ={"FACEMATCH_HTTP__PROT": "1"})


def test_each_scoring_threshold_has_one_default():
    import dataclasses

    from edge.liveness.presentation import PresentationParams
    from edge.liveness.validator import ValidatorParams

    configured = {
        ValidatorParams: ["accuracy_threshold"], PresentationParams: ["texture_threshold", "screen_pattern_threshold"]
    }  # fmt: skip
    for cls, names in configured.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            assert fields[name].default is dataclasses.MISSING, f"{cls.__name__}.{name} repeats config's default"


# -- the command line -----------------------------------------------------------------------------------------


def test_help_describes_the_commands(capsys):
    from edge.cli import main

    for argv in (["--help"], ["up", "--help"], ["doctor", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "``" not in text and "The ``facematch`` command" not in text
    with pytest.raises(SystemExit):
        main(["up", "--help"])
    assert "Restarts a process that dies" in capsys.readouterr().out


def test_liveness_score_refuses_a_sequence_the_server_never_issues(capsys, tmp_path):
    from edge.cli import main

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    assert main(["liveness", "score", str(video), "--sequence", "1,2,3"]) == 2
    err = capsys.readouterr().err
    assert "1,2,3 is not a sequence the server issues" in err and "--any-sequence" in err


def test_liveness_score_refuses_durations_that_do_not_fit_the_sequence(capsys, tmp_path):
    from edge.cli import main

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    for durations in ("2.7,3.3", "2.7,x,3", "2.7,0,3.0"):
        assert main(["liveness", "score", str(video), "--sequence", "1,5,3", "--durations", durations]) == 2
        assert "--durations takes one length in seconds per cell" in capsys.readouterr().err


def test_liveness_score_follows_the_drawn_window_lengths(challenge_video, model_settings, capsys):
    """A recording made for a served challenge is scored on that challenge's own schedule."""
    from edge.cli import main

    code = main(["liveness", "score", str(challenge_video), "--sequence", "1,5,3", "--durations", "2.4,3.6,3.0",
                 "--json"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == (0 if result["result"] == "pass" else 1)
    assert [a["frames"] for a in result["sequence_results"]] == pytest.approx([24, 36, 30], abs=1)


def test_mediapipe_start_up_noise_stays_off_stderr(model_settings):
    script = (
        "from edge.vision.gaze import GazeTracker\n"
        "from models import model_path\n"
        "from edge.config import load_settings\n"
        "t = GazeTracker(model_path(load_settings(environ={}).models.dir, 'face_landmarker'))\n"
        "t.close()\n"
    )
    done = run_python(script)
    assert done.stderr.strip() == "", done.stderr


def test_progress_bars_stay_out_of_ci_logs(monkeypatch, capsys):
    from edge import progress

    monkeypatch.setenv("CI", "true")
    assert list(progress.progress(range(3), "quiet")) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err
    monkeypatch.delenv("CI")
    monkeypatch.setattr(progress.os, "isatty", lambda fd: True)
    assert progress.enabled()


def test_each_bench_is_its_own_subcommand_module_with_a_typed_result():
    from edge.bench import gaze, lfw, liveness, match, pad, pad_video
    from edge.bench.result import BenchResult
    from edge.cli import build_parser

    parser = build_parser()
    for module, name in ((lfw, "lfw"), (match, "match"), (liveness, "liveness"), (pad, "pad"), (gaze, "gaze")):
        assert callable(module.add_parser) and callable(module.main), name
    results = (lfw.LfwResult, match.MatchBenchResult, liveness.LivenessBenchResult, pad.PadResult,
               pad_video.PadVideoResult, gaze.GazeResult)  # fmt: skip
    assert all(issubclass(result, BenchResult) for result in results)
    args = parser.parse_args(["bench", "gaze", "--data", "x", "--screen", "1920x1080", "--json"])
    assert args.bench_main is gaze.main and args.screen == (1920, 1080) and args.json
    args = parser.parse_args(["bench", "gaze", "--data", "x", "--scale", "0.5", "--min-eye-width", "0"])
    assert (args.scale, args.min_eye_width) == (0.5, 0.0)
    for wrong in ("0", "-1", "half"):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "gaze", "--data", "x", "--scale", wrong])


def test_bench_idle_reads_the_cpu_of_each_process_up_started(tmp_path, capsys):
    from pathlib import Path

    from edge.bench.idle import cpu_seconds
    from edge.cli import main

    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        deadline = time.monotonic() + 10
        while cpu_seconds(os.getpid()).get(Path(sys.executable).name, 0.0) < 0.3:
            assert time.monotonic() < deadline, cpu_seconds(os.getpid())
            time.sleep(0.1)
        assert cpu_seconds(os.getpid())["up"] > 0  # this process, standing for `facematch up`
    finally:
        child.kill()
        child.wait()
    assert main(["bench", "idle", "--data-dir", str(tmp_path)]) == 2
    assert "no video at" in capsys.readouterr().err


def test_bench_pad_prints_a_typed_result_as_json(data_dir, model_settings, capsys):
    from edge.bench.pad import PadResult
    from edge.cli import main

    assert main(["bench", "pad", "--data", str(data_dir / "spoof"), "--json"]) == 0
    result = PadResult.model_validate_json(capsys.readouterr().out)
    assert result.sources and result.ms_per_face > 0 and result.rule == "min"
    assert "BPCER" in result.report()


def test_a_bench_without_its_data_says_so(tmp_path, capsys):
    from edge.cli import main

    assert main(["bench", "gaze", "--data", str(tmp_path)]) == 2
    assert "no game_video_<ts>.mp4" in capsys.readouterr().err


def test_bench_load_runs_and_overload_is_refused_not_queued(model_settings, faces_dir, capsys):
    from edge.bench.load import LoadResult
    from edge.cli import main

    photos = [str(faces_dir / "face_recognition/examples" / name) for name in ("obama.jpg", "obama2.jpg")]
    assert main(["bench", "load", *photos, "--clients", "12", "--seconds", "4", "--json"]) == 0
    result = LoadResult.model_validate_json(capsys.readouterr().out)
    answers = result.endpoints["/match"].answers
    assert answers.get("200", 0) > 0
    assert set(answers) <= {"200", "503 overloaded"}, answers  # nothing else: no 500, no timeout
    assert result.resident_mb_end and "inference" in result.resident_mb_end


def test_every_module_imports_on_its_own():
    """Each module imported first, in a fresh set of the project's modules: an import cycle shows here, not in the
    field (`facematch credentials init` once failed that way)."""
    script = (
        "import importlib, pathlib, sys\n"
        "root = pathlib.Path('.')\n"
        "files = [p for d in ('edge', 'hub', 'models') for p in (root / d).rglob('*.py') if p.name != '__main__.py']\n"
        "names = sorted({'.'.join(p.with_suffix('').parts).removesuffix('.__init__') for p in files})\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] in ('edge', 'hub', 'models')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc}')\n"
        "print(len(names)); print('\\n'.join(failed))\n"
    )
    done = run_python(script)
    count, *failures = done.stdout.strip().splitlines()
    assert int(count) > 40 and not failures, failures


def test_a_lifespan_run_twice_leaves_the_hub_as_it_was(settings):
    # schemathesis runs an ASGI app's lifespan itself, on top of the TestClient's: the second start must not
    # reconnect the bus (it dropped the connection under the network thread) nor subscribe anything twice.
    client = hub_client(settings)
    try:
        hub = client.app.state.hub
        assert hub.bus.wait_connected(5)
        before = hub.bus._client.socket().getsockname()
        subscriptions = len(hub.bus._subscriptions)
        hub.start()
        time.sleep(2.0)
        assert hub.bus._client.socket().getsockname() == before and len(hub.bus._subscriptions) == subscriptions
    finally:
        client.__exit__(None, None, None)
    asyncio.run(client.app.state.hub.aclose())  # and a second close is harmless
