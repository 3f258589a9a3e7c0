"""Credentials of the embedded broker and Redis: one password per component, one for Redis, made once.

`facematch up` (and `install.sh`) create ``<state_dir>/credentials.json`` (mode 600) on first use. When `up` starts
its own Mosquitto and Redis it configures them from this file (a password file and an ACL for the broker,
``requirepass`` for Redis) and records their ports in it. A process that connects to one of those services (same local
port, no credentials in its URL) takes its login from here; a URL that carries its own credentials always wins, and
services that `up` did not start are used exactly as their URLs say.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from edge.atomic import write_atomic
from edge.bus.topics import Component
from edge.config import Settings
from edge.services import is_local_host

FILE_NAME = "credentials.json"


# The local broker's logins: one per component, and the bridge to the central broker (Mosquitto's bridge logs in to
# the local broker as this user, so the ACL decides what it may carry in and out).
BRIDGE_USER = "bridge"
LOGINS = [c.value for c in Component] + [BRIDGE_USER]


def credentials_path(settings: Settings) -> Path:
    return settings.paths.credentials_file or settings.paths.state_dir / FILE_NAME


@dataclass
class Credentials:
    mqtt: dict[str, str] = field(default_factory=dict)  # component -> password
    redis: str = ""
    mqtt_port: int | None = None  # the embedded broker's port, once `up` started it
    redis_port: int | None = None

    @classmethod
    def generate(cls) -> Credentials:
        return cls(mqtt={name: secrets.token_urlsafe(24) for name in LOGINS}, redis=secrets.token_urlsafe(24))

    @classmethod
    def load(cls, path: Path) -> Credentials | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(data.get("mqtt", {}), data.get("redis", ""), data.get("mqtt_port"), data.get("redis_port"))

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.__dict__, indent=1), mode=0o600)


def ensure(path: Path, *, rotate: bool = False) -> Credentials:
    """The credentials in ``path``, created (or, with ``rotate``, replaced by new passwords) when needed."""
    existing = None if rotate else Credentials.load(path)
    if existing is not None:
        # A component added since the file was made gets its password now.
        missing = [name for name in LOGINS if name not in existing.mqtt]
        if missing:
            existing.mqtt.update({name: secrets.token_urlsafe(24) for name in missing})
            existing.save(path)
        return existing
    fresh = Credentials.generate()
    old = Credentials.load(path)
    if old is not None:
        fresh.mqtt_port, fresh.redis_port = old.mqtt_port, old.redis_port
    fresh.save(path)
    return fresh


def mqtt_login(settings: Settings, component: Component, url: str) -> tuple[str, str] | None:
    """(username, password) for ``component`` when ``url`` is the embedded broker and carries no login."""
    parts = urlsplit(url)
    creds = Credentials.load(credentials_path(settings))
    if parts.username or creds is None or creds.mqtt_port is None:
        return None
    if (
        not is_local_host(parts.hostname)
        or (parts.port or 1883) != creds.mqtt_port
        or component.value not in creds.mqtt
    ):
        return None
    return component.value, creds.mqtt[component.value]


def redis_url(settings: Settings) -> str:
    """The Redis URL to connect with: the configured one, with the embedded Redis's password added when it is that
    Redis and the URL has none."""
    url = settings.redis.url
    parts = urlsplit(url)
    creds = Credentials.load(credentials_path(settings))
    if parts.password or creds is None or creds.redis_port is None or parts.scheme != "redis":
        return url
    if not is_local_host(parts.hostname) or (parts.port or 6379) != creds.redis_port:
        return url
    netloc = f":{creds.redis}@{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def acl(prefix: str, home_assistant_prefix: str = "homeassistant") -> str:
    """The broker's ACL: only workers read requests and send replies, only the hub sends requests (so nothing else
    sees images), a reply reaches only the client that asked (its id is the reply topic's last level), and each
    component writes only its own presence."""
    base = f"{prefix}/+"
    rules = {
        Component.INFERENCE: [
            f"topic read {base}/rpc/+/request",
            f"topic read {base}/rpc/+/+/request",
            f"topic write {base}/rpc/reply/#",
            f"topic readwrite {base}/gallery/changed",
            f"topic read {base}/camera/frame",
            # the door flow's output
            f"topic write {base}/challenge/#",
            f"topic write {base}/events/#",
            f"topic write {base}/door/command",
            f"topic write {base}/stats",
        ],
        Component.HUB: [
            f"topic write {base}/rpc/+/request",
            f"topic write {base}/rpc/+/+/request",
            f"topic read {base}/+/+/status",
            f"topic read {base}/+/+/info",
            f"topic read {base}/events/#",
            f"topic write {base}/gallery/changed",
            # fleet commands: read, answered on cmd/<name>/result
            f"topic read {base}/cmd/+",
            f"topic write {base}/cmd/+/result",
            f"topic write {home_assistant_prefix}/+/+/+/config",  # Home Assistant discovery
        ],
        Component.CAMERA: [f"topic write {base}/camera/frame", f"topic write {base}/stats"],
        Component.DISPLAY: [
            f"topic read {base}/challenge/#",
            f"topic read {base}/events/#",
            f"topic read {base}/+/+/status",
            f"topic read {base}/+/+/info",
            f"topic write {base}/display/timing",
            f"topic read {base}/door/indicator",
            f"topic write {base}/stats",
        ],
        Component.DOOR: [
            f"topic read {base}/door/command",
            f"topic write {base}/events/door",
            f"topic write {base}/door/indicator",
        ],
        Component.SUPERVISOR: [
            f"topic read {base}/+/+/status",
            f"topic read {base}/+/+/info",
            f"topic read {base}/cmd/restart",  # the fleet's restart command, for the children `up` runs
            f"topic write {base}/cmd/restart/result",
        ],
    }
    lines = [
        "# Generated by facematch up from credentials.json: one user per component.",
        f"pattern read {base}/rpc/reply/%c",  # every client reads the replies addressed to its own client id
        "",
        # The bridge carries out what the fleet may see (never frames, RPCs or images) and in only fleet commands:
        # no local component may write a command, so a command on the device came from the central broker.
        f"user {BRIDGE_USER}",
        f"topic read {base}/events/#",
        f"topic read {base}/+/+/status",
        f"topic read {base}/+/+/info",
        f"topic read {base}/stats",
        f"topic read {base}/cmd/+/result",
        f"topic write {base}/cmd/+",
        f"topic read {home_assistant_prefix}/+/+/+/config",
    ]
    for component, own in rules.items():
        lines += ["", f"user {component.value}"]
        lines.append(f"topic readwrite {base}/{component.value}/+/status")
        lines.append(f"topic readwrite {base}/{component.value}/+/info")
        lines.extend(own)
    return "\n".join(lines) + "\n"
