import subprocess
import sys

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
    devices = glob_module.glob("/dev/video*")
    camera = check_camera()
    assert (camera.level == OK) == bool(devices) or "picamera2" in camera.detail
    display = check_display()
    has_display_device = bool(glob_module.glob("/dev/dri/card*") + glob_module.glob("/dev/fb[0-9]"))
    assert (display.level == OK) == has_display_device
    if display.level != OK:
        assert display.fix


def test_exactly_one_opencv():
    assert check_opencv().level != FAIL


def test_doctor_command_runs():
    out = subprocess.run([sys.executable, "-m", "edge.cli", "doctor"], capture_output=True, text=True, timeout=60)
    assert "redis-server" in out.stdout and "camera" in out.stdout and "display" in out.stdout
    assert out.returncode in (0, 1)
