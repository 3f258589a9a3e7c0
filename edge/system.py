"""``facematch system install|uninstall``: the appliance's layout on a device (what ``install.sh --system`` runs).

The application lives in ``/opt/facematch/releases/<name>`` (each with its own virtual environment) and
``/opt/facematch/current`` points at the one that runs: an upgrade builds the new release beside the old one and only
switches the link once it is whole and its configuration loads, so a failed upgrade leaves the old one running.
Configuration and credentials are in ``/etc/facematch``, state (models, spool, API keys) in ``/var/lib/facematch``;
the distribution's Redis and Mosquitto are configured for the product by drop-ins. Every path here can be placed
under another root (``--root DIR``), where nothing is asked of systemd or of the user database: that is how the layout
is tested on a machine without systemd.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.atomic import write_atomic
from edge.config import Settings, load_settings

USER = "facematch"
UNITS = ("facematch.target", "facematch-inference.service", "facematch-hub.service", "facematch-camera.service",
         "facematch-display.service", "facematch-door.service", "facematch-bridge.service")  # fmt: skip
# The system services' own ports (Debian's defaults): the credentials file names them so that every component logs in.
MQTT_PORT = 1883
REDIS_PORT = 6379
REDIS_INCLUDE = "include /etc/redis/facematch.conf"
KEEP_RELEASES = 3


class InstallError(Exception):
    """The installation cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Layout:
    """Where everything goes, under ``root`` ("/" on a device)."""

    root: Path = Path("/")

    def at(self, final: str) -> Path:
        """The path under this root of what the device sees at ``final`` (an absolute path)."""
        return self.root / final.lstrip("/")

    @property
    def app(self) -> Path:
        return self.at("/opt/facematch")

    @property
    def current(self) -> Path:
        return self.at("/opt/facematch/current")

    @property
    def etc(self) -> Path:
        return self.at("/etc/facematch")

    @property
    def state(self) -> Path:
        return self.at("/var/lib/facematch")

    @property
    def units(self) -> Path:
        return self.at("/etc/systemd/system")

    @property
    def on_device(self) -> bool:
        return self.root == Path("/")


def system_environment(layout: Layout, *, final: bool) -> dict[str, str]:
    """The appliance's paths, as its units see them (``final``) or as seen from here (under ``layout.root``)."""

    def path(p: str) -> str:
        return p if final else str(layout.at(p))

    return {
        "FACEMATCH_CONFIG": path("/etc/facematch/config.yaml"),
        "FACEMATCH_CREDENTIALS_FILE": path("/etc/facematch/credentials.json"),
        "FACEMATCH_GALLERY__KEY_FILE": path("/etc/facematch/gallery.key"),
        "FACEMATCH_STATE_DIR": path("/var/lib/facematch"),
        "FACEMATCH_MODELS__DIR": path("/var/lib/facematch/models"),
        "FACEMATCH_API_KEYS_FILE": path("/var/lib/facematch/api_keys.json"),
    }


# Given to the installer's environment (``sudo CENTRAL_MQTT_URL=… ./install.sh --system``), kept for every unit and
# on later upgrades: who the device is and where its fleet is.
DEVICE_VARIABLES = ("DEVICE_ID", "CENTRAL_MQTT_URL")


def read_environment_file(layout: Layout) -> dict[str, str]:
    path = layout.etc / "facematch.env"
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def environment_file(layout: Layout, environ: dict[str, str] | None = None) -> str:
    """``facematch.env``: the appliance's paths, and the device's identity and fleet broker when given (a value from
    an earlier install is kept unless a new one is given)."""
    env = os.environ if environ is None else environ
    earlier = read_environment_file(layout)
    device = {name: env.get(name) or earlier.get(name) for name in DEVICE_VARIABLES}
    values = {**system_environment(layout, final=True), **{k: v for k, v in device.items() if v}}
    return ("# The appliance's paths and identity (install.sh --system); its settings are in config.yaml.\n"
            + "".join(f"{k}={v}\n" for k, v in values.items()))  # fmt: skip


def load_system_settings(layout: Layout) -> Settings:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FACEMATCH_") or k == "FACEMATCH_MODELS_DIR"}
    device = {k: v for k, v in read_environment_file(layout).items() if k in DEVICE_VARIABLES}
    return load_settings(environ={**environ, **device, **system_environment(layout, final=False)})


# -- owners and modes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int

    @classmethod
    def named(cls, user: str) -> Owner:
        entry = pwd.getpwnam(user)
        return cls(entry.pw_uid, entry.pw_gid)

    @classmethod
    def root(cls) -> Owner:
        return cls(0, 0)


def _group_id(name: str, fallback: int) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return fallback


def _place(path: Path, owner: Owner, mode: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, owner.uid, owner.gid)
    path.chmod(mode)


def _directory(path: Path, owner: Owner, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _place(path, owner, mode)


def _file(path: Path, text: str, owner: Owner, mode: int) -> None:
    write_atomic(path, text, mode)
    _place(path, owner, mode)


# -- the pieces ---------------------------------------------------------------------------------------------------


def ensure_user(user: str, say: Callable[[str], None]) -> None:
    """A system user without a login shell or a home of its own; its groups come per unit (SupplementaryGroups)."""
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/facematch", "--no-create-home",
                    "--shell", "/usr/sbin/nologin", user], check=True)  # fmt: skip
    say(f"created the system user {user}")


def write_credentials(layout: Layout, owner: Owner) -> None:
    from edge.credentials import ensure

    path = layout.etc / "credentials.json"
    credentials = ensure(path)  # made once; a component added by an upgrade gets its login now
    if (credentials.mqtt_port, credentials.redis_port) != (MQTT_PORT, REDIS_PORT):
        credentials.mqtt_port, credentials.redis_port = MQTT_PORT, REDIS_PORT
        credentials.save(path)
    _place(path, owner, 0o600)
    key = layout.etc / "gallery.key"
    if not key.exists():
        from edge.store.sealing import create_key_file

        create_key_file(key)
    _place(key, owner, 0o600)


def configure_mosquitto(layout: Layout, settings: Settings) -> None:
    """Logins and ACL for the distribution's Mosquitto (Debian includes ``conf.d``; its own file keeps persistence
    on): loopback only, no anonymous client."""
    from edge.credentials import Credentials, acl
    from edge.services import ServiceError, write_password_file

    credentials = Credentials.load(layout.etc / "credentials.json")
    assert credentials is not None
    broker = _owner_or_root("mosquitto")
    passwd = layout.at("/etc/mosquitto/facematch.passwd")
    try:
        write_password_file(passwd, credentials.mqtt)
    except ServiceError as exc:
        raise InstallError(str(exc)) from None
    _place(passwd, broker, 0o600)
    _file(layout.at("/etc/mosquitto/facematch.acl"),
          acl(settings.mqtt.topic_prefix, settings.mqtt.home_assistant_prefix), broker, 0o600)  # fmt: skip
    _file(layout.at("/etc/mosquitto/conf.d/facematch.conf"), "\n".join([
        "# facematch (install.sh --system): loopback only, one login per component, the ACL of docs/SECURITY.md.",
        "# Persistence is on in Debian's mosquitto.conf: QoS 1 messages queued for the fleet survive a restart.",
        f"listener {MQTT_PORT} 127.0.0.1",
        "allow_anonymous false",
        "password_file /etc/mosquitto/facematch.passwd",
        "acl_file /etc/mosquitto/facematch.acl",
    ]) + "\n", Owner.root(), 0o644)  # fmt: skip


def configure_redis(layout: Layout) -> None:
    """A password, loopback only, and append-only persistence (the gallery and the audit log live here): a power cut
    loses at most the last second, and a torn last write is dropped whole on load (``aof-load-truncated``)."""
    from edge.credentials import Credentials

    credentials = Credentials.load(layout.etc / "credentials.json")
    assert credentials is not None
    server = _owner_or_root("redis")
    _file(layout.at("/etc/redis/facematch.conf"), "\n".join([
        "# facematch (install.sh --system), included at the end of redis.conf so that it wins.",
        f"port {REDIS_PORT}",
        "bind 127.0.0.1 -::1",
        "protected-mode yes",
        f"requirepass {credentials.redis}",
        "appendonly yes",
        "appendfsync everysec",
        "aof-load-truncated yes",
    ]) + "\n", Owner(0, server.gid), 0o640)  # fmt: skip
    main = layout.at("/etc/redis/redis.conf")
    text = main.read_text() if main.exists() else ""
    if REDIS_INCLUDE not in text.splitlines():
        write_atomic(main, text + ("" if text.endswith("\n") or not text else "\n") + REDIS_INCLUDE + "\n", 0o640)
        _place(main, Owner(0, server.gid), 0o640)


def _owner_or_root(user: str) -> Owner:
    try:
        return Owner.named(user)
    except KeyError:
        return Owner.root()


def device_dropins(settings: Settings) -> dict[str, list[str]]:
    """Per unit, the devices it may open and the groups it runs with: only the units that need a device get one."""
    from edge.cli import processes

    wanted = {name for name, _ in processes(settings)}
    dropins: dict[str, list[str]] = {}
    camera = settings.camera
    if "camera" in wanted and camera.source in ("v4l2", "gstreamer", "picamera2"):
        device = camera.device if camera.device.startswith("/dev/") else f"/dev/video{camera.device}"
        allow = [f"DeviceAllow={device} rw"] if camera.source == "v4l2" else ["DeviceAllow=char-video4linux rw"]
        if camera.source == "picamera2":  # libcamera also opens the media controller and DMA heaps
            allow += ["DeviceAllow=char-media rw", "DeviceAllow=/dev/dma_heap rw"]
        dropins["facematch-camera.service"] = [*allow, "SupplementaryGroups=video"]
    if "display" in wanted:
        dropins["facematch-display.service"] = ["DeviceAllow=char-drm rw", "DeviceAllow=char-input r",
                                                "SupplementaryGroups=video render input"]  # fmt: skip
    if "door" in wanted:
        lines, groups = [], []
        if settings.door.relay.enabled:
            lines.append(f"DeviceAllow={settings.door.relay.chip} rw")
            groups.append("gpio")
        if settings.door.osdp.enabled:
            lines.append(f"DeviceAllow={settings.door.osdp.port} rw")
            groups.append("dialout")
        present = [g for g in groups if _group_id(g, -1) >= 0]
        dropins["facematch-door.service"] = lines + ([f"SupplementaryGroups={' '.join(present)}"] if present else [])
    return dropins


def wanted_units(settings: Settings) -> list[str]:
    from edge.cli import processes

    return ["facematch-bridge.service"] + [f"facematch-{name}.service" for name, _ in processes(settings)]


def install_units(layout: Layout, release: Path, settings: Settings) -> None:
    """The units (as shipped in ``systemd/``), a drop-in per unit that needs devices, and the target's wants."""
    root = Owner.root()
    _directory(layout.units, root, 0o755)
    for name in UNITS:
        _file(layout.units / name, (release / "systemd" / name).read_text(), root, 0o644)
        stale = layout.units / f"{name}.d" / "devices.conf"
        stale.unlink(missing_ok=True)
    for name, lines in device_dropins(settings).items():
        folder = layout.units / f"{name}.d"
        _directory(folder, root, 0o755)
        _file(folder / "devices.conf", "# Written by facematch system install from config.yaml.\n[Service]\n"
              + "\n".join(lines) + "\n", root, 0o644)  # fmt: skip
    wants = layout.units / "facematch.target.d"
    _directory(wants, root, 0o755)
    _file(wants / "components.conf", "# Written by facematch system install: the components config.yaml asks for.\n"
          "[Unit]\nWants=" + " ".join(wanted_units(settings)) + "\n", root, 0o644)  # fmt: skip


def switch_current(layout: Layout, release: Path) -> Path | None:
    """Point ``current`` at ``release`` in one rename; returns the release it pointed at before."""
    previous = layout.current.resolve() if layout.current.is_symlink() else None
    staged = layout.app / ".current.new"
    staged.unlink(missing_ok=True)
    staged.symlink_to(os.path.relpath(release, layout.app))  # relative: right under any root
    os.replace(staged, layout.current)
    return previous


def prune_releases(layout: Layout, keep: list[Path]) -> None:
    releases = layout.app / "releases"
    if not releases.is_dir():
        return
    kept = {p.resolve() for p in keep}
    old = sorted((p for p in releases.iterdir() if p.resolve() not in kept), key=lambda p: p.stat().st_mtime)
    for path in old[: max(0, len(old) - (KEEP_RELEASES - len(kept)))]:
        shutil.rmtree(path, ignore_errors=True)


def wrapper_script() -> str:
    env = system_environment(Layout(), final=True)
    exports = "".join(f"export {k}={v}\n" for k, v in env.items())
    return ("#!/bin/sh\n# facematch on this appliance: its paths, then the running release's command.\n"
            + exports + 'exec /opt/facematch/current/.venv/bin/facematch "$@"\n')  # fmt: skip


def first_api_key(settings: Settings, owner: Owner, say: Callable[[str], None]) -> None:
    from hub.security import _read_keys, create_key

    keys_file = settings.api.keys_file
    if _read_keys(keys_file):
        return
    key = create_key(keys_file, "install")
    _place(keys_file, owner, 0o600)
    say(f"the first API key (shown once; more with: facematch keys create): {key}")


# -- install, upgrade, uninstall ------------------------------------------------------------------------------------


def install(layout: Layout, release: Path, *, user: str = USER, say: Callable[[str], None] = print,
            health_timeout: float = 240.0) -> int:  # fmt: skip
    """Lay out (or upgrade) the appliance from ``release``; on a device, also the user, units and a health check
    that switches back to the previous release when the new one does not become healthy."""
    release = release.resolve()
    if layout.on_device:
        ensure_user(user, say)
    try:
        owner = Owner.named(user)
    except KeyError:
        raise InstallError(f"no user {user}: create it (useradd --system {user}) or pass --user") from None
    shared = Owner(0, owner.gid)
    _directory(layout.etc, shared, 0o750)
    _directory(layout.state, owner, 0o750)
    for sub in ("models", "spool", "tensorrt"):
        _directory(layout.state / sub, owner, 0o750)
    for fetched in (layout.state / "models").rglob("*"):  # fetched by install.sh as root; derived copies are made
        _place(fetched, owner, 0o750 if fetched.is_dir() else 0o640)  # beside them by the daemon
    config = layout.etc / "config.yaml"
    if not config.exists():
        _file(config, (release / "config.yaml").read_text(), shared, 0o640)
        say(f"wrote {layout.at('/etc/facematch/config.yaml')} (the commented defaults: edit it, then restart)")
    else:
        say(f"kept {config}")
    _file(layout.etc / "facematch.env", environment_file(layout), shared, 0o640)
    try:
        settings = load_system_settings(layout)
    except Exception as exc:  # the new release cannot read the kept configuration: stop before switching to it
        raise InstallError(f"{config}: {exc} (nothing was switched; the previous release keeps running)") from None
    write_credentials(layout, owner)
    configure_mosquitto(layout, settings)
    configure_redis(layout)
    install_units(layout, release, settings)
    _directory(layout.at("/usr/local/bin"), Owner.root(), 0o755)
    _file(layout.at("/usr/local/bin/facematch"), wrapper_script(), Owner.root(), 0o755)
    _directory(layout.app, Owner.root(), 0o755)
    previous = switch_current(layout, release)
    first_api_key(settings, owner, say)
    if not layout.on_device:
        say(f"laid out under {layout.root} (no systemd, user database or services touched)")
        return 0
    _systemctl("daemon-reload")
    _systemctl("restart", "facematch-bridge.service")  # writes (or removes) Mosquitto's bridge drop-in first
    _systemctl("restart", "redis-server.service", "mosquitto.service")
    _systemctl("enable", "facematch.target", *wanted_units(settings))
    _systemctl("restart", "facematch.target")
    if not wait_healthy(settings, health_timeout):
        if previous is not None and previous != release:
            switch_current(layout, previous)
            _systemctl("restart", "facematch.target")
            raise InstallError(f"{release.name} did not become healthy within {health_timeout:.0f} s: switched back "
                               f"to {previous.name} (see: journalctl -u 'facematch-*' -b)")  # fmt: skip
        raise InstallError(f"facematch did not become healthy within {health_timeout:.0f} s: "
                           "journalctl -u 'facematch-*' -b says why; facematch doctor checks the machine")  # fmt: skip
    prune_releases(layout, [release] + ([previous] if previous else []))
    say(f"facematch {release.name} is running")
    return 0


def wait_healthy(settings: Settings, timeout: float) -> bool:
    import httpx

    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{host}:{settings.http.port}/health", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(2)
    return False


def _systemctl(*args: str) -> None:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise InstallError(f"systemctl {' '.join(args)}: {result.stderr.strip() or result.returncode}")


def uninstall(layout: Layout, say: Callable[[str], None] = print) -> int:
    """Remove the application, its units and the drop-ins; keep configuration, credentials and data (say where)."""
    if layout.on_device:
        subprocess.run(["systemctl", "disable", "--now", *UNITS], capture_output=True)
    for name in UNITS:
        (layout.units / name).unlink(missing_ok=True)
        shutil.rmtree(layout.units / f"{name}.d", ignore_errors=True)
    for path in ("/etc/mosquitto/conf.d/facematch.conf", "/etc/mosquitto/facematch.passwd",
                 "/etc/mosquitto/facematch.acl", "/etc/mosquitto/conf.d/facematch-bridge.conf",
                 "/etc/redis/facematch.conf", "/usr/local/bin/facematch"):  # fmt: skip
        layout.at(path).unlink(missing_ok=True)
    main = layout.at("/etc/redis/redis.conf")
    if main.exists():
        lines = main.read_text().splitlines()
        if REDIS_INCLUDE in lines:
            write_atomic(main, "\n".join(line for line in lines if line != REDIS_INCLUDE) + "\n", 0o640)
    shutil.rmtree(layout.app, ignore_errors=True)
    if layout.on_device:
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
        subprocess.run(["systemctl", "restart", "redis-server.service", "mosquitto.service"], capture_output=True)
    kept = [layout.etc, layout.state]
    say("removed facematch (application, units, Redis and Mosquitto drop-ins); kept: "
        + ", ".join(str(p) for p in kept)
        + "; the gallery and audit log stay in Redis's own data (/var/lib/redis). Remove them yourself when no "
        "longer needed: rm -r " + " ".join(str(p) for p in kept) + f"; userdel {USER}")  # fmt: skip
    return 0


def add_parser(sub: Any) -> None:
    system = sub.add_parser(
        "system", help="install, upgrade or remove the appliance under systemd (install.sh --system)"
    )
    system.add_argument("action", choices=["install", "uninstall"])
    system.add_argument("--root", type=Path, default=Path("/"), help="lay out under this directory (no systemd)")
    system.add_argument("--release", type=Path, help="the release directory to run (default: this checkout)")
    system.add_argument("--user", default=USER, help="the unprivileged user the units run as")


def run(args: Any) -> int:
    from edge.config import PROJECT_ROOT

    layout = Layout(args.root.resolve())
    try:
        if args.action == "uninstall":
            return uninstall(layout)
        return install(layout, args.release or PROJECT_ROOT, user=args.user)
    except InstallError as exc:
        print(f"facematch system {args.action}: {exc}", file=sys.stderr)
        return 1
