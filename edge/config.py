"""Typed configuration: ``config.yaml`` (or ``$FACEMATCH_CONFIG``) plus environment overrides.

This is the only module that parses configuration. Every other module receives a :class:`Settings`.

Environment overrides follow one rule (pydantic-settings): ``FACEMATCH_<SECTION>__<KEY>`` sets ``section.key``
(``FACEMATCH_HTTP__PORT=9000``, ``FACEMATCH_LIVENESS__ACCURACY_THRESHOLD=0.85``; lists as JSON), and a top-level key
is ``FACEMATCH_<KEY>``. The seed's flat names (``PORT``, ``REDIS_URL``, …) and a few short ones are kept as aliases
(:data:`ENV_ALIASES`). Precedence: alias, then the generic name, then the file, then the default.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from edge.atomic import write_atomic
from edge.vision.model_id import ACCURATE_EMBEDDERS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config.yaml"


class ConfigError(Exception):
    """A configuration value is unusable. The message is one line meant for the operator."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedisSettings(_Section):
    url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")
    session_ttl: int = Field(300, ge=10, le=3600, description="liveness session lifetime, seconds")


class MqttSettings(_Section):
    url: str = Field("mqtt://127.0.0.1:1883", pattern=r"^(mqtt|mqtts)://")
    central_url: str | None = Field(None, pattern=r"^(mqtt|mqtts)://", description="the fleet's broker (bridged)")
    central_cafile: Path | None = Field(None, description="CA certificate of the central broker (mqtts)")
    central_certfile: Path | None = Field(None, description="this device's client certificate (mutual TLS)")
    central_keyfile: Path | None = Field(None, description="its private key")
    home_assistant: bool = Field(False, description="publish Home Assistant MQTT discovery for this device")
    home_assistant_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_\-/]+$")
    topic_prefix: str = Field("facematch", pattern=r"^[A-Za-z0-9_\-/]+$")
    keepalive: int = Field(30, ge=5, le=600)


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    request_timeout: float = Field(30.0, gt=0, le=300, description="image URL fetch and RPC timeout, seconds")
    max_image_size: int = Field(10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, description="bytes")
    max_image_dimension: int = Field(1024, ge=160, le=8192, description="pixels, longest side after downscale")
    max_video_size: int = Field(50 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024, description="bytes")
    max_archive_size: int = Field(
        512 * 1024 * 1024, ge=1024, le=16 * 1024**3, description="bytes of a gallery archive sent to /gallery/import"
    )
    url_allow_networks: list[str] = Field(
        default_factory=list, description="private networks image URLs may point at (refused by default)"
    )
    # Requests worked on at once by one hub; past that, 503 `overloaded` with Retry-After instead of a queue that
    # grows without bound (latency stays bounded under overload). 2 cores: /match takes ~0.1 s, a video ~1.4 s.
    max_inflight_match: int = Field(8, ge=1, le=1000)
    max_inflight_liveness: int = Field(4, ge=1, le=1000)
    # Slow or stuck clients: a request head must arrive within header_timeout, its body within body_timeout (a
    # trickle holding a connection open is cut, 408), and one address may have this many requests in flight.
    header_timeout: float = Field(10.0, gt=0, le=600, description="seconds for a complete request head")
    body_timeout: float = Field(60.0, gt=0, le=3600, description="seconds for a complete request body")
    max_requests_per_address: int = Field(16, ge=1, le=10000, description="requests in flight from one address")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses of reverse proxies whose X-Forwarded-For is believed (empty: none, not even loopback)",
    )

    @field_validator("url_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # raises ValueError naming the bad entry
        return value


class ApiSettings(_Section):
    keys_file: Path = Field(PROJECT_ROOT / "var" / "api_keys.json", description="hashed API keys")
    rate_limit_per_key: str = Field("120/minute", pattern=r"^\d+/(second|minute|hour|day)$")
    rate_limit_per_address: str = Field("240/minute", pattern=r"^\d+/(second|minute|hour|day)$")
    cors_origins: list[str] = Field(default_factory=list, description="empty: CORS off")


class MatchingSettings(_Section):
    similarity_threshold: float = Field(0.6, ge=0.0, le=1.0)
    detector: Literal["yunet", "mtcnn"] = "yunet"
    # fast: one embedder (`embedder`); accurate: the embedders of `accurate_embedders` fused. Licences differ
    # (README, "Matching profiles"): FaceNet's weights were trained on MS-Celeb-1M, withdrawn by Microsoft in 2019;
    # InsightFace's MobileFaceNet (mbf) is for non-commercial research only.
    profile: Literal["fast", "accurate"] = "fast"
    embedder: Literal["sface", "facenet", "mbf", "dlib"] = Field("sface", description="the fast profile's embedder")
    accurate_embedders: list[Literal["sface", "facenet", "mbf"]] = Field(
        default_factory=lambda: list(ACCURATE_EMBEDDERS),
        min_length=2,
        description="what the accurate profile fuses; each combination needs its fitted fusion (facematch calibrate)",
    )
    flip_embedding: bool = Field(True, description="embed the face and its mirror image (more accurate, ~2× slower)")

    @field_validator("accurate_embedders")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("list each embedder once")
        return value


class GallerySettings(_Section):
    # The open-set rule (docs/IDENTIFY.md): a stranger is given a name with at most this probability, whatever the
    # gallery's size (the threshold rises with it).
    target_fpir: float = Field(0.01, gt=0.0, lt=1.0, description="share of strangers that may be given a name")
    margin_decades: float = Field(
        0.0, ge=0.0, le=5.0, description="the runner-up must be this many decades of FMR less likely (0: off)"
    )
    near_duplicate_cosine: float = Field(
        0.95, gt=0.0, le=1.0, description="a new face this close to one of the subject's faces is skipped"
    )
    max_faces_per_subject: int = Field(20, ge=1, le=1000)
    store_enrollment_images: bool = Field(False, description="keep enrolment photos (else embeddings only)")
    key_file: Path | None = Field(None, description="AES-GCM key: embeddings and photos are encrypted at rest")
    probe_ttl: int = Field(3600, ge=0, le=30 * 86400, description="seconds a probe is kept for 'this is not X'")
    recent_identifications: int = Field(100, ge=0, le=10000, description="kept for the operator page")


class LivenessSettings(_Section):
    area_duration: float = Field(3.0, ge=1.0, le=10.0, description="seconds each grid cell is highlighted")
    accuracy_threshold: float = Field(0.8, ge=0.0, le=1.0)
    antispoof_threshold: float = Field(0.5, ge=0.0, le=1.0, description="live probability a face needs")
    antispoof_rule: Literal["min", "mean"] = Field("min", description="how the two MiniFASNet models are combined")
    # Both measured by `facematch bench pad --video` (docs/LIVENESS.md): on the webcam recordings here the texture
    # model's mean over a challenge is under 0.014 for 5 % of real people's clips, so the video threshold is 0.01.
    video_antispoof_threshold: float = Field(
        0.01, ge=0.0, le=1.0, description="mean live probability over a challenge video (see docs/LIVENESS.md)"
    )
    screen_pattern_threshold: float = Field(
        2.0, ge=0.0, description="moiré peak around the face above which a challenge video is a filmed screen"
    )
    # The optional learned gaze network reads the rows (docs/LIVENESS.md). Its weights are CC-BY-NC-SA 4.0
    # (non-commercial): off unless asked for, with `pip install MNN` and `facematch models fetch gaze_net`.
    gaze_net: bool = Field(
        False, description="add the gaze network's reading to the iris's for the rows (non-commercial licence)"
    )
    gaze_net_interval: float = Field(0.4, ge=0.0, le=2.0, description="seconds between frames the network runs on")
    # A subject's gaze calibration, taken on the device after enrolment (`POST /subjects/{id}/gaze-calibration`),
    # asks that person's challenges for a share of their own eye movement. Measured on the recordings here, every share
    # cost genuine passes (docs/LIVENESS.md, "Per-person calibration"), so it is off; the shares are the bench's pair.
    person_calibration: bool = Field(
        False, description="the door flow's challenge uses the identified subject's gaze calibration when it has one"
    )
    calibration_gain_share: float = Field(
        0.5, ge=0.0, le=1.0, description="a challenge's eye movement per column must reach this share of the person's"
    )
    calibration_row_gap_share: float = Field(
        0.5, ge=0.0, le=1.0, description="the rows must lie this share of the person's row gap apart"
    )


class CameraSettings(_Section):
    # none: no camera daemon work (the HTTP product alone). The daemon retries a source it cannot open, with backoff.
    source: Literal["none", "v4l2", "rtsp", "gstreamer", "picamera2", "file"] = "v4l2"
    device: str = Field("/dev/video0", description="V4L2 path or index, RTSP URL, GStreamer pipeline, or video file")
    width: int = Field(640, ge=160, le=3840)
    height: int = Field(480, ge=120, le=2160)
    capture_fps: float = Field(30.0, gt=0, le=120, description="asked of the camera")
    fps: float = Field(15.0, gt=0, le=60, description="frames published per second (the door flow's rate)")
    jpeg_quality: int = Field(85, ge=30, le=100)
    loop: bool = Field(True, description="a file source starts over at its end")
    stats_interval: float = Field(5.0, ge=1.0, le=300.0, description="seconds between stats messages")


class RelaySettings(_Section):
    """A relay on a GPIO line for the door strike (or a panel's request-to-exit input), pulsed on a grant."""

    enabled: bool = False
    chip: str = Field("/dev/gpiochip0", description="the GPIO chip (gpiodetect lists them)")
    line: str = Field("GPIO17", description="the line's name on the chip (gpioinfo) or its offset")
    active_low: bool = Field(False, description="the relay board energises on a low level")
    contact_line: str | None = Field(None, description="a door-contact input: reports forced and held-open doors")
    contact_active_low: bool = False
    held_open_seconds: float = Field(30.0, gt=0, le=3600)


class OsdpSettings(_Section):
    """The appliance as an OSDP reader on an RS-485 line: a grant reaches the panel as a card read."""

    enabled: bool = False
    port: str = Field("/dev/ttyUSB0", description="the USB-RS485 adapter")
    baud: int = Field(9600, description="as set on the panel (9600 or 115200 are usual)")
    address: int = Field(0, ge=0, le=126, description="the reader's address on the bus, as set on the panel")
    key_file: Path | None = Field(None, description="the secure-channel key (default <state_dir>/osdp-scbk.hex)")
    card_format: Literal["wiegand26", "ascii"] = "wiegand26"
    facility_code: int = Field(0, ge=0, le=255, description="for wiegand26 (card numbers 0..65535)")


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Hours(_Section):
    """A weekly time window in the device's local time: ``days`` from ``start`` to ``end`` (HH:MM, end excluded)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(default_factory=lambda: list(WEEKDAYS))
    start: str = Field("00:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field("24:00", pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")


class SubjectRule(_Section):
    allow: bool = True
    valid_from: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD, first day allowed")
    valid_until: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD, last day allowed")
    challenge: bool | None = Field(None, description="always (true) or never (false) ask this person; null: the tier")


class LockoutSettings(_Section):
    failures: int = Field(5, ge=1, le=1000, description="denied walk-ups at this door within window_seconds...")
    window_seconds: float = Field(300.0, gt=0, le=86400)
    lockout_seconds: float = Field(300.0, ge=0, le=86400, description="...lock it for this long (0: never)")


class PolicySettings(_Section):
    """Who may open this door, when, and what proof it asks (edge/policy.py; docs/DOOR.md)."""

    access_hours: list[Hours] = Field(default_factory=list, description="when anyone may enter; empty: any time")
    office_hours: list[Hours] = Field(default_factory=list, description="for the out_of_hours challenge tier")
    min_score: float | None = Field(None, ge=0.0, description="a calibrated identification score asked on top of the "
                                    "open-set rule (null: the open-set rule alone)")  # fmt: skip
    subjects: dict[str, SubjectRule] = Field(default_factory=dict, description="per subject id: allow, validity, tier")
    lockout: LockoutSettings = LockoutSettings()
    timezone: str | None = Field(None, description="IANA name for the hours (default: the device's local time)")


class DoorSettings(_Section):
    """The live door flow on camera frames (run by one inference worker per device) and its policy."""

    flow: bool = Field(True, description="run the door flow on camera frames (needs camera.source other than none)")
    challenge: bool | Literal["out_of_hours", "after_failure"] = Field(
        True,
        description="the gaze challenge: always (true), never (false), or only out of office hours / after a "
        "denied walk-up at this door (risk tiers); passive anti-spoofing is always checked",
    )
    antispoof_required: bool = Field(True, description="deny a face the passive anti-spoofing models find not live")
    unlock_seconds: float = Field(5.0, gt=0, le=600, description="door/command unlock duration")
    challenge_lead: float = Field(1.0, ge=0.2, le=5.0, description="seconds from challenge/start to its first window")
    min_eye_distance: float = Field(40.0, ge=10, le=500, description="pixels: close enough to be walking up")
    steady_seconds: float = Field(0.3, ge=0.0, le=5.0, description="the face stays still this long before a walk-up")
    face_lost_seconds: float = Field(1.0, gt=0, le=10.0, description="a challenge ends when the face is gone this long")
    stall_seconds: float = Field(1.5, gt=0, le=30.0, description="a challenge ends when no frame arrives this long")
    rewalk_seconds: float = Field(
        10.0, ge=0, le=3600, description="after a decision, a face still in view starts a new walk-up after this long"
    )
    idle_fps: float = Field(
        5.0,
        ge=0,
        le=60,
        description="frames a second looked at once nobody has been in view for face_lost_seconds "
        "(0: every frame); a face brings back every frame",
    )
    relay: RelaySettings = RelaySettings()
    osdp: OsdpSettings = OsdpSettings()
    policy: PolicySettings = PolicySettings()
    audit_retention_days: float = Field(90.0, gt=0, le=3650, description="access decisions kept in the audit")


class DisplaySettings(_Section):
    # None (auto): `facematch up` starts the display when a screen is there (DISPLAY, WAYLAND_DISPLAY or a DRM card).
    enabled: bool | None = None
    fullscreen: bool = True
    width: int = Field(800, ge=160, le=7680, description="window size when not full screen")
    height: int = Field(480, ge=120, le=4320)
    fps: int = Field(60, ge=10, le=240, description="the most frames drawn a second (unchanged screens are not)")
    stats_interval: float = Field(5.0, ge=1.0, le=300.0, description="seconds between stats messages")
    screenshot_dir: Path | None = Field(None, description="save the first frame of each screen kind here (tests)")


class ModelSettings(_Section):
    dir: Path = Field(PROJECT_ROOT / "models" / "weights", description="where fetched weights are stored")
    source_dir: Path | None = Field(None, description="a local directory searched first by the fetcher")
    onnx_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)
    tensorrt_cache_dir: Path | None = Field(None, description="TensorRT engine cache (default <state_dir>/tensorrt)")


class PathSettings(_Section):
    state_dir: Path = Field(PROJECT_ROOT / "var", description="data and logs of embedded services, spool")
    # install.sh --system keeps it under /etc/facematch (mode 600); a development checkout in the state directory.
    credentials_file: Path | None = Field(
        None, description="broker logins and Redis password (default <state_dir>/credentials.json)"
    )


NAME_PATTERN = r"^[A-Za-z0-9_\-.]+$"
ENV_PREFIX = "FACEMATCH_"
ENV_NESTED = "__"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED, extra="forbid")

    device_id: str = Field(default_factory=socket.gethostname, pattern=NAME_PATTERN)
    # Which machine a process runs on: RPCs that name local files (a spooled video) go only to workers of this host.
    host_id: str = Field(default_factory=socket.gethostname, pattern=NAME_PATTERN)
    # This process's name among instances of its component (status topic, RPC replies). Default: the host id.
    instance_id: str | None = Field(None, pattern=NAME_PATTERN)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    redis: RedisSettings = RedisSettings()
    mqtt: MqttSettings = MqttSettings()
    http: HttpSettings = HttpSettings()
    api: ApiSettings = ApiSettings()
    matching: MatchingSettings = MatchingSettings()
    gallery: GallerySettings = GallerySettings()
    liveness: LivenessSettings = LivenessSettings()
    camera: CameraSettings = CameraSettings()
    door: DoorSettings = DoorSettings()
    display: DisplaySettings = DisplaySettings()
    models: ModelSettings = ModelSettings()
    paths: PathSettings = PathSettings()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("instance_id")
    @classmethod
    def _default_instance(cls, value: str | None, info: Any) -> str | None:
        return value or info.data.get("host_id")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings passes the file's tree and the environment as init values: ordered here by precedence.
        return (init_settings,)


# The seed's flat names and a few short ones -> dotted key. Anything else: FACEMATCH_<SECTION>__<KEY>.
ENV_ALIASES: dict[str, str] = {
    "REDIS_URL": "redis.url",
    "SESSION_TTL": "redis.session_ttl",
    "SIMILARITY_THRESHOLD": "matching.similarity_threshold",
    "MAX_IMAGE_SIZE": "http.max_image_size",
    "REQUEST_TIMEOUT": "http.request_timeout",
    "MAX_IMAGE_DIMENSION": "http.max_image_dimension",
    "PORT": "http.port",
    "AREA_DURATION": "liveness.area_duration",
    "ACCURACY_THRESHOLD": "liveness.accuracy_threshold",
    "DEVICE_ID": "device_id",
    "MQTT_URL": "mqtt.url",
    "CENTRAL_MQTT_URL": "mqtt.central_url",
    "ANTISPOOF_THRESHOLD": "liveness.antispoof_threshold",
    "FACEMATCH_MODELS_DIR": "models.source_dir",
    "FACEMATCH_HOST": "http.host",
    "FACEMATCH_STATE_DIR": "paths.state_dir",
    "FACEMATCH_DETECTOR": "matching.detector",
    "FACEMATCH_EMBEDDER": "matching.embedder",
    "FACEMATCH_API_KEYS_FILE": "api.keys_file",
    "FACEMATCH_CREDENTIALS_FILE": "paths.credentials_file",
    "FACEMATCH_VIDEO_ANTISPOOF_THRESHOLD": "liveness.video_antispoof_threshold",
    "FACEMATCH_ONNX_PROVIDERS": "models.onnx_providers",
}
# Keys whose alias takes a comma-separated list.
COMMA_LISTS = {"models.onnx_providers", "http.url_allow_networks", "api.cors_origins"}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        node = tree.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config error: {name} must be a mapping, got {node!r}")
        tree = node
    tree[leaf] = value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_paths(tree: dict[str, Any], base: Path) -> None:
    """Relative paths in a config file are relative to that file, not to the working directory."""
    paths = [("models", "dir"), ("models", "source_dir"), ("paths", "state_dir"), ("paths", "credentials_file"),
             ("api", "keys_file")]  # fmt: skip
    for section, key in paths:
        value = tree.get(section, {}).get(key) if isinstance(tree.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute():
            tree[section][key] = str((base / value).resolve())


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' own FACEMATCH_<SECTION>__<KEY> rule, reading a given mapping instead of os.environ."""

    def __init__(self, environ: dict[str, str]):
        self._given = environ
        super().__init__(Settings, case_sensitive=False)

    def _load_env_vars(self) -> dict[str, str | None]:
        return {k.lower(): v for k, v in self._given.items() if v != ""}


def _generic_env(environ: dict[str, str], sources: dict[str, str]) -> dict[str, Any]:
    try:
        tree = _MappingEnvSource(environ)()
    except SettingsError as exc:
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        raise ConfigError(
            f"config error: a {ENV_PREFIX}{field.upper()}{ENV_NESTED}… variable is not valid JSON (write lists and "
            "mappings as JSON, e.g. '[\"10.0.0.0/8\"]')"
        ) from None
    for variable in environ:
        upper = variable.upper()
        if upper.startswith(ENV_PREFIX) and upper not in ENV_ALIASES:
            dotted = upper[len(ENV_PREFIX) :].lower().replace(ENV_NESTED, ".")
            sources[dotted] = variable
    return tree


def _aliases(environ: dict[str, str], sources: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for variable, dotted in ENV_ALIASES.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        value: Any = [p.strip() for p in raw.split(",") if p.strip()] if dotted in COMMA_LISTS else raw
        _set_dotted(tree, dotted, value)
        sources[dotted] = variable
    return tree


def _describe(error: dict[str, Any], sources: dict[str, str]) -> str:
    dotted = ".".join(str(part) for part in error["loc"])
    origin = next((sources[k] for k in (dotted, dotted.rsplit(".", 1)[0]) if k in sources), None)
    where = f" (from {origin})" if origin else ""
    if error["type"] == "extra_forbidden":
        return f"config error: unknown key {dotted}{where}"
    return f"config error: {dotted} = {error.get('input')!r}{where}: {error['msg']}"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config error: {path} is not valid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config error: {path} must contain a mapping at the top level")
    models = loaded.get("models")
    if isinstance(models, dict) and isinstance(models.get("onnx_providers"), str):
        models["onnx_providers"] = [p.strip() for p in models["onnx_providers"].split(",") if p.strip()]
    _resolve_paths(loaded, path.parent)
    return loaded


# Values set by the fleet (`cmd/config-set`), kept in the state directory: over the config file, under the
# environment (what the operator set on the device itself wins).
FLEET_OVERRIDES = "config.fleet.yaml"
# Keys the fleet may not set: a wrong value would cut the device off from its broker, its data or its keys.
FLEET_LOCKED = ("paths.", "redis.url", "mqtt.url", "mqtt.central", "api.keys_file", "models.", "gallery.key_file",
                "device_id", "host_id", "instance_id")  # fmt: skip


def _state_dir(tree: dict[str, Any], env: dict[str, str]) -> Path:
    explicit = env.get("FACEMATCH_STATE_DIR") or env.get("FACEMATCH_PATHS__STATE_DIR")
    return Path(explicit or tree.get("paths", {}).get("state_dir") or PathSettings().state_dir)


def _tree(env: dict[str, str], path: str | Path | None = None, overrides: dict[str, Any] | None = None,
          sources: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The whole configuration tree: the file, the fleet's overrides (``overrides`` instead of the file's, when
    given), the generic environment names, the aliases."""
    explicit = path or env.get("FACEMATCH_CONFIG")
    config_file = Path(explicit) if explicit else DEFAULT_CONFIG_FILE
    tree: dict[str, Any] = {}
    if config_file.exists():
        tree = _read_file(config_file)
    elif explicit:
        raise ConfigError(f"config error: config file {config_file} does not exist")
    if overrides is None:
        fleet_file = _state_dir(tree, env) / FLEET_OVERRIDES
        overrides = _read_file(fleet_file) if fleet_file.exists() else {}
    sources = {} if sources is None else sources
    tree = _merge(tree, overrides)
    tree = _merge(tree, _generic_env(env, sources))
    return _merge(tree, _aliases(env, sources))


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate the configuration; raise :class:`ConfigError` with one line on a bad value."""
    env = dict(os.environ if environ is None else environ)
    sources: dict[str, str] = {}
    tree = _tree(env, path, sources=sources)
    try:
        return Settings(**tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], sources)) from None


def write_fleet_overrides(values: dict[str, Any], environ: dict[str, str] | None = None) -> tuple[Path, list[str]]:
    """Validate dotted ``values`` against the whole configuration, then add them to the fleet's overrides file
    atomically (a power cut leaves the old file or the new one). Returns the file and the keys that changed."""
    env = dict(os.environ if environ is None else environ)
    for key in values:
        if key.startswith(FLEET_LOCKED) or key in FLEET_LOCKED:
            raise ConfigError(f"config error: {key} can only be set on the device itself")
    path = load_settings(environ=env).paths.state_dir / FLEET_OVERRIDES
    existing = _read_file(path) if path.exists() else {}
    updated = json.loads(json.dumps(existing))
    for key, value in values.items():
        _set_dotted(updated, key, value)
    try:
        Settings(**_tree(env, overrides=updated))
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], {})) from None
    write_atomic(path, yaml.safe_dump(updated, sort_keys=True), mode=0o640)
    return path, [k for k in values if _get_dotted(existing, k) != values[k]]


def _get_dotted(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for name in dotted.split("."):
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def redact(url: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``: URLs are shown (health, doctor, logs) without
    their passwords."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def load_settings_or_exit() -> Settings:
    """For a process's entry point: the settings, or the one-line error on stderr and exit code 2."""
    try:
        return load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
