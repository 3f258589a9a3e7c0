"""``facematch doctor``: what is installed, reachable or missing, and the fix for each."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edge.bus import BrokerAddress, Bus, Component, Presence, RpcMethod
from edge.bus.messages import HealthRequest
from edge.config import Settings, redact
from edge.credentials import redis_url
from edge.errors import FacematchError
from edge.services import port_open
from edge.store import Store

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    level: str
    detail: str
    fix: str = ""


def _version_of(binary: str, flag: str = "--version") -> str:
    try:
        out = subprocess.run([binary, flag], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else ""


def _binary_check(name: str, package: str) -> Check:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        return Check(name, FAIL, "not installed", f"sudo apt-get install {package} (or ./install.sh)")
    flag = "-h" if name == "mosquitto" else "--version"
    return Check(name, OK, f"{path} {_version_of(path, flag)}".strip())


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if (3, 10) <= sys.version_info[:2] <= (3, 12):
        return Check("python", OK, f"{version} ({sys.executable})")
    return Check("python", FAIL, f"{version} is not supported", "use Python 3.10, 3.11 or 3.12")


def check_redis(settings: Settings) -> Check:
    if Store(redis_url(settings), socket_timeout=1.0).ping():
        return Check("redis", OK, f"answering at {redact(settings.redis.url)}")
    return Check(
        "redis",
        WARN,
        f"nothing answers at {redact(settings.redis.url)}",
        "`facematch up` starts one when the URL is local; otherwise start Redis or fix REDIS_URL",
    )


def check_broker(settings: Settings) -> Check:
    address = BrokerAddress.parse(settings.mqtt.url)
    if port_open(address.host, address.port, timeout=1.0):
        return Check("broker", OK, f"answering at {redact(settings.mqtt.url)}")
    return Check(
        "broker",
        WARN,
        f"nothing answers at {redact(settings.mqtt.url)}",
        "`facematch up` starts mosquitto when the URL is local; otherwise start the broker or fix MQTT_URL",
    )


def check_opencv() -> Check:
    names = sorted(
        {d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].lower().startswith("opencv")}
    )
    if len(names) == 1:
        return Check("opencv", OK, f"{names[0]} {metadata.version(names[0])}")
    if not names:
        return Check("opencv", FAIL, "no OpenCV distribution installed", "./install.sh")
    return Check(
        "opencv",
        FAIL,
        f"several OpenCV distributions installed: {', '.join(names)}",
        "pip uninstall them all, then reinstall the project (./install.sh): they overwrite each other's cv2",
    )


def check_onnxruntime(settings: Settings) -> Check:
    if importlib.util.find_spec("onnxruntime") is None:
        return Check("onnxruntime", FAIL, "not installed", "./install.sh")
    import onnxruntime

    available = onnxruntime.get_available_providers()
    missing = [p for p in settings.models.onnx_providers if p not in available]
    detail = f"{onnxruntime.__version__}; available providers: {', '.join(available)}"
    if missing:
        return Check(
            "onnxruntime",
            WARN,
            f"{detail}; configured but unavailable: {', '.join(missing)}",
            "install onnxruntime-gpu (./install.sh --gpu) or remove them from models.onnx_providers",
        )
    return Check("onnxruntime", OK, f"{detail}; using {', '.join(settings.models.onnx_providers)}")


def check_gaze_net(settings: Settings) -> Check | None:
    """The optional gaze network's runtime, when the network is switched on (its weights are a model check)."""
    if not settings.liveness.gaze_net:
        return None
    from edge.vision.gaze_net import GazeNetUnavailable, import_mnn

    try:
        mnn = import_mnn()
    except GazeNetUnavailable as exc:
        return Check("gaze network", FAIL, str(exc), "pip install -e .[gaze-net] (or set liveness.gaze_net: false)")
    return Check("gaze network", OK, f"MNN {mnn.version()}; weights licensed CC-BY-NC-SA 4.0 (non-commercial use)")


def check_models(settings: Settings) -> list[Check]:
    try:
        from models.manifest import load_manifest
    except ImportError:
        return [Check("models", WARN, "the model fetcher is not installed", "./install.sh")]
    from models.fetch import required_by

    checks = []
    required = required_by(settings)
    for spec in load_manifest().models.values():
        path = settings.models.dir / spec.file
        if path.exists():
            checks.append(Check(f"model {spec.name}", OK, str(path)))
        else:
            level = FAIL if spec.default or spec.name in required else WARN
            checks.append(Check(f"model {spec.name}", level, "not fetched", f"facematch models fetch {spec.name}"))
    return checks


def check_calibration(settings: Settings) -> Check:
    """The configured profile's templates need their calibration (and, for ``accurate``, the fitted fusion of the
    configured embedders); the inference daemon cannot start without them."""
    from edge.vision.calibration import Calibration, CalibrationMissing
    from edge.vision.fusion import FusionMissing
    from edge.vision.model_id import configured_model_id

    profile = settings.matching.profile
    fix = "facematch calibrate --profile accurate --lfw-dir … (or list a shipped combination in accurate_embedders)"
    try:
        model_id = configured_model_id(settings)
        calibration = Calibration.load(model_id)
    except FusionMissing as exc:
        return Check("calibration", FAIL, f"{profile} profile: {exc}", fix)
    except CalibrationMissing as exc:
        return Check("calibration", FAIL, f"{profile} profile: {exc}", "facematch calibrate --lfw-dir …")
    source = calibration.meta.get("source", "source not recorded")
    return Check("calibration", OK, f"{profile} profile, {model_id}: 0.6 = FMR 1e-3 at cosine "
                 f"{calibration.cosine_for(0.6):.4f} ({source})")  # fmt: skip


def check_camera(settings: Settings) -> Check:
    """The configured source, and every V4L2 camera OpenCV can open and read a frame from."""
    from edge.camera.sources import openable_cameras

    configured = f"configured: {settings.camera.source} {settings.camera.device}"
    if settings.camera.source == "none":
        return Check("camera", OK, "camera.source is none: the camera daemon publishes nothing")
    if settings.camera.source == "file":
        exists = Path(settings.camera.device).is_file()
        return Check("camera", OK if exists else FAIL, configured + ("" if exists else ": no such file"),
                     "" if exists else "set camera.device to a video file")  # fmt: skip
    cameras = openable_cameras()
    if cameras:
        return Check("camera", OK, f"{configured}; can open: {', '.join(cameras)}")
    if importlib.util.find_spec("picamera2") is not None:
        return Check("camera", OK, f"{configured}; picamera2 importable (Raspberry Pi camera)")
    if settings.camera.source in ("rtsp", "gstreamer"):
        return Check("camera", OK, f"{configured} (not opened by doctor: the daemon reports it)")
    return Check(
        "camera",
        WARN,
        f"{configured}; no camera can be opened (no readable /dev/video*, no picamera2)",
        "plug in a USB camera (and add the user to the `video` group), or set camera.source to file/rtsp; "
        "the HTTP API works without a camera",
    )


def check_display() -> Check:
    if os.environ.get("WAYLAND_DISPLAY") or os.environ.get("DISPLAY"):
        return Check(
            "display",
            OK,
            f"DISPLAY={os.environ.get('DISPLAY', '')} WAYLAND_DISPLAY={os.environ.get('WAYLAND_DISPLAY', '')}",
        )
    cards = glob.glob("/dev/dri/card*") + glob.glob("/dev/fb[0-9]")
    if cards:
        return Check("display", OK, f"no desktop session, but {', '.join(sorted(cards))} present")
    return Check(
        "display",
        WARN,
        "no monitor (no DISPLAY, no /dev/dri or /dev/fb)",
        "attach a monitor for the door challenge; the web page at / works without one",
    )


def check_api_keys(settings: Settings) -> Check:
    from hub.security import ApiKeys

    if ApiKeys(settings).configured:
        return Check("api keys", OK, f"keys in {settings.api.keys_file} or FACEMATCH_API_KEYS")
    return Check("api keys", FAIL, "no API key: every API call will get 401", "facematch keys create --name admin")


def check_inference_worker(settings: Settings, wait: float = 3.0) -> Check:
    address = BrokerAddress.parse(settings.mqtt.url)
    if not port_open(address.host, address.port, timeout=1.0):
        return Check("inference", WARN, "cannot ask: the broker is not answering", "facematch up")
    bus = Bus(settings, Component.HUB, instance="doctor")
    presence = Presence(bus)
    try:
        if not bus.start(wait=wait):
            return Check("inference", WARN, f"the broker {address} refused or did not answer the connection")
        presence.wait_until(lambda p: bool(p.online(Component.INFERENCE)), wait)
        online = presence.online(Component.INFERENCE)
        runs_on = ""
        if online:
            try:
                info = bus.call(RpcMethod.HEALTH, HealthRequest(), timeout=wait)
                runs_on = "; runs on: " + ", ".join(f"{role} {where}" for role, where in info.runs_on.items())
            except FacematchError as exc:
                runs_on = f"; did not say what it runs on ({exc.message})"
    finally:
        bus.stop()
    if online:
        return Check("inference", OK, f"live worker(s): {', '.join(online)}{runs_on}")
    return Check("inference", FAIL, "no inference worker is online: /match and liveness answer 503",
                 "facematch up (or start facematch-inference.service); its log says why it stopped")  # fmt: skip


def check_hub(settings: Settings) -> Check:
    import httpx

    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
    url = f"http://{host}:{settings.http.port}/health"
    try:
        response = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        return Check("hub", WARN, f"{url} does not answer ({type(exc).__name__})", "facematch up")
    status = (
        response.json().get("status", "?")
        if response.headers.get("content-type", "").startswith("application/json")
        else "?"
    )
    level = OK if response.status_code == 200 else WARN
    return Check("hub", level, f"{url} answers {response.status_code} ({status})")


def run_checks(settings: Settings) -> list[Check]:
    checks = [
        check_python(),
        _binary_check("redis-server", "redis-server"),
        _binary_check("mosquitto", "mosquitto"),
        check_redis(settings),
        check_broker(settings),
        check_opencv(),
        check_onnxruntime(settings),
    ]
    checks += check_models(settings)
    checks.append(check_calibration(settings))
    checks += [check for check in (check_gaze_net(settings),) if check is not None]
    checks += [check_api_keys(settings), check_inference_worker(settings), check_hub(settings)]
    checks += [check_camera(settings), check_display()]
    return checks


def report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append(f"[{check.level:>4}] {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"{'':>7} {'':<{width}}  fix: {check.fix}")
    return "\n".join(lines)
