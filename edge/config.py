"""Typed configuration: ``config.yaml`` (or ``$FACEMATCH_CONFIG``) plus environment overrides.

This is the only module that parses configuration. Every other module receives a :class:`Settings`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
    central_url: str | None = Field(None, pattern=r"^(mqtt|mqtts)://")
    topic_prefix: str = Field("facematch", pattern=r"^[A-Za-z0-9_\-/]+$")
    keepalive: int = Field(30, ge=5, le=600)


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    request_timeout: float = Field(30.0, gt=0, le=300, description="image URL fetch and RPC timeout, seconds")
    max_image_size: int = Field(10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, description="bytes")
    max_image_dimension: int = Field(1024, ge=160, le=8192, description="pixels, longest side after downscale")
    max_video_size: int = Field(50 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024, description="bytes")
    url_allow_networks: list[str] = Field(
        default_factory=list, description="private networks image URLs may point at (refused by default)"
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
    embedder: Literal["sface", "facenet", "dlib"] = "sface"
    flip_embedding: bool = Field(True, description="embed the face and its mirror image (more accurate, ~2× slower)")


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


class ModelSettings(_Section):
    dir: Path = Field(PROJECT_ROOT / "models" / "weights", description="where fetched weights are stored")
    source_dir: Path | None = Field(None, description="a local directory searched first by the fetcher")
    onnx_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)


class PathSettings(_Section):
    state_dir: Path = Field(PROJECT_ROOT / "var", description="data and logs of embedded services, spool")


class Settings(_Section):
    device_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9_\-.]+$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    redis: RedisSettings = RedisSettings()
    mqtt: MqttSettings = MqttSettings()
    http: HttpSettings = HttpSettings()
    api: ApiSettings = ApiSettings()
    matching: MatchingSettings = MatchingSettings()
    liveness: LivenessSettings = LivenessSettings()
    models: ModelSettings = ModelSettings()
    paths: PathSettings = PathSettings()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# Environment variable -> dotted key. The seed's names first, then facematch's own.
ENV_OVERRIDES: dict[str, str] = {
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
    "FACEMATCH_MODELS_DIR": "models.source_dir",
    "FACEMATCH_HOST": "http.host",
    "FACEMATCH_STATE_DIR": "paths.state_dir",
    "FACEMATCH_LOG_LEVEL": "log_level",
    "FACEMATCH_DETECTOR": "matching.detector",
    "FACEMATCH_EMBEDDER": "matching.embedder",
    "FACEMATCH_API_KEYS_FILE": "api.keys_file",
    "ANTISPOOF_THRESHOLD": "liveness.antispoof_threshold",
    "FACEMATCH_VIDEO_ANTISPOOF_THRESHOLD": "liveness.video_antispoof_threshold",
}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        node = tree.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config error: {name} must be a mapping, got {node!r}")
        tree = node
    tree[leaf] = value


def _resolve_paths(tree: dict[str, Any], base: Path) -> None:
    """Relative paths in a config file are relative to that file, not to the working directory."""
    for section, key in (("models", "dir"), ("models", "source_dir"), ("paths", "state_dir"), ("api", "keys_file")):
        value = tree.get(section, {}).get(key) if isinstance(tree.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute():
            tree[section][key] = str((base / value).resolve())


def _describe(error: dict[str, Any], sources: dict[str, str]) -> str:
    dotted = ".".join(str(part) for part in error["loc"])
    origin = sources.get(dotted)
    where = f" (from {origin})" if origin else ""
    if error["type"] == "extra_forbidden":
        return f"config error: unknown key {dotted}{where}"
    return f"config error: {dotted} = {error.get('input')!r}{where}: {error['msg']}"


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate the configuration; raise :class:`ConfigError` with one line on a bad value."""
    env = os.environ if environ is None else environ
    explicit = path or env.get("FACEMATCH_CONFIG")
    config_file = Path(explicit) if explicit else DEFAULT_CONFIG_FILE
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file.exists():
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config error: {config_file} is not valid YAML: {exc}".replace("\n", " ")) from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config error: {config_file} must contain a mapping at the top level")
        tree = loaded
        _resolve_paths(tree, config_file.parent)
    elif explicit:
        raise ConfigError(f"config error: config file {config_file} does not exist")

    for variable, dotted in ENV_OVERRIDES.items():
        raw = env.get(variable)
        if raw is not None and raw != "":
            _set_dotted(tree, dotted, raw)
            sources[dotted] = variable
    if isinstance(tree.get("models"), dict) and "onnx_providers" in tree["models"]:
        providers = tree["models"]["onnx_providers"]
        if isinstance(providers, str):
            tree["models"]["onnx_providers"] = [p.strip() for p in providers.split(",") if p.strip()]
    provider_env = env.get("FACEMATCH_ONNX_PROVIDERS")
    if provider_env:
        _set_dotted(tree, "models.onnx_providers", [p.strip() for p in provider_env.split(",") if p.strip()])
        sources["models.onnx_providers"] = "FACEMATCH_ONNX_PROVIDERS"

    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], sources)) from None


def load_settings_or_exit() -> Settings:
    """For a process's entry point: the settings, or the one-line error on stderr and exit code 2."""
    try:
        return load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
