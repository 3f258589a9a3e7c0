import subprocess
import sys

from edge.config import load_settings
from edge.doctor import FAIL, OK, WARN, check_camera, check_display, check_opencv, run_checks


def test_doctor_reports_live_services(settings):
    checks = {c.name: c for c in run_checks(settings)}
    assert checks["redis"].level == OK and settings.redis.url in checks["redis"].detail
    assert checks["broker"].level == OK
    assert checks["opencv"].level == OK  # exactly one OpenCV distribution in the venv
    assert checks["onnxruntime"].level in (OK, WARN)


def test_doctor_names_the_fix_for_unreachable_services():
    from edge.config import load_settings

    settings = load_settings(environ={"REDIS_URL": "redis://127.0.0.1:1/0", "MQTT_URL": "mqtt://127.0.0.1:1"})
    checks = {c.name: c for c in run_checks(settings)}
    assert checks["redis"].level == WARN and "REDIS_URL" in checks["redis"].fix
    assert checks["broker"].level == WARN and "MQTT_URL" in checks["broker"].fix


def test_camera_and_display_tell_the_truth(monkeypatch):
    import glob as glob_module

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    from edge.camera.sources import openable_cameras

    camera = check_camera(load_settings(environ={}))
    assert (camera.level == OK) == bool(openable_cameras()) or "picamera2" in camera.detail
    assert "configured: v4l2 /dev/video0" in camera.detail
    display = check_display()
    has_display_device = bool(glob_module.glob("/dev/dri/card*") + glob_module.glob("/dev/fb[0-9]"))
    assert (display.level == OK) == has_display_device
    if display.level != OK:
        assert display.fix


def test_doctor_checks_a_file_camera(tmp_path):
    missing = check_camera(load_settings(environ={"FACEMATCH_CAMERA__SOURCE": "file",
                                                  "FACEMATCH_CAMERA__DEVICE": str(tmp_path / "no.mp4")}))  # fmt: skip
    assert missing.level == FAIL and "no such file" in missing.detail


def test_exactly_one_opencv():
    assert check_opencv().level != FAIL


def test_doctor_command_runs():
    out = subprocess.run([sys.executable, "-m", "edge.cli", "doctor"], capture_output=True, text=True, timeout=60)
    assert "redis-server" in out.stdout and "camera" in out.stdout and "display" in out.stdout
    assert out.returncode in (0, 1)


def test_doctor_checks_keys_a_live_worker_and_the_hub(settings, inference_worker):
    from edge.doctor import check_api_keys, check_hub, check_inference_worker
    from hub.security import create_key

    assert check_api_keys(settings).level == FAIL and "keys create" in check_api_keys(settings).fix
    create_key(settings.api.keys_file, "admin")
    assert check_api_keys(settings).level == OK
    worker = check_inference_worker(settings)
    assert worker.level == OK and inference_worker.instance in worker.detail
    assert "embedding ONNX Runtime (CPUExecutionProvider)" in worker.detail, worker.detail
    hub = check_hub(settings)  # nothing serves this test's HTTP port
    assert hub.level == WARN and "does not answer" in hub.detail and hub.fix


def test_doctor_says_when_no_worker_is_live(settings):
    from edge.doctor import check_inference_worker

    check = check_inference_worker(settings, wait=1.0)
    assert check.level == FAIL and "no inference worker" in check.detail


def test_doctor_never_shows_passwords():
    from edge.config import load_settings

    settings = load_settings(
        environ={"REDIS_URL": "redis://fm:s3cret@127.0.0.1:1/0", "MQTT_URL": "mqtt://u:pw9@127.0.0.1:1"}
    )
    text = " ".join(f"{c.detail} {c.fix}" for c in run_checks(settings))
    assert "s3cret" not in text and "pw9" not in text


def test_doctor_checks_the_gaze_networks_runtime_only_when_it_is_on(monkeypatch):
    from edge import doctor
    from edge.vision import gaze_net

    assert doctor.check_gaze_net(load_settings(environ={})) is None  # off by default: nothing to check
    on = load_settings(environ={"FACEMATCH_LIVENESS__GAZE_NET": "true"})

    def missing():
        raise gaze_net.GazeNetUnavailable("the gaze network needs the MNN runtime: pip install MNN")

    monkeypatch.setattr(gaze_net, "import_mnn", missing)
    check = doctor.check_gaze_net(on)
    assert check is not None and check.level == doctor.FAIL and "gaze-net" in check.fix


def test_doctor_checks_the_configured_profile_has_its_calibration():
    from edge.doctor import check_calibration

    fast = check_calibration(load_settings(environ={}))
    assert fast.level == OK and "sface-2021dec-flip" in fast.detail and "View 1" in fast.detail
    accurate = check_calibration(load_settings(environ={"FACEMATCH_MATCHING__PROFILE": "accurate"}))
    assert accurate.level == OK and "fused-sface+facenet+mbf-" in accurate.detail
    unfitted = check_calibration(
        load_settings(
            environ={
                "FACEMATCH_MATCHING__PROFILE": "accurate",
                "FACEMATCH_MATCHING__ACCURATE_EMBEDDERS": '["facenet", "mbf"]',
            }
        )
    )
    assert unfitted.level == FAIL and "no fusion fitted for facenet-msceleb-flip + mbf-w600k-flip" in unfitted.detail
    assert "facematch calibrate --profile accurate" in unfitted.fix
