"""The appliance install (`install.sh --system`, edge/system.py): the units pass `systemd-analyze verify`, the
install refuses to start where systemd is not PID 1, and the whole layout (modes, owners, config, the system's Redis
and Mosquitto drop-ins, units and their device drop-ins, upgrade and uninstall) is checked in a throwaway root."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

UNITS = sorted((PROJECT_ROOT / "systemd").glob("facematch*"))
LONG_RUNNING = [u for u in UNITS if u.suffix == ".service" and "Type=oneshot" not in u.read_text()]


def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # The units name the installed release; here they run this checkout (verify checks that ExecStart exists).
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/facematch/current", str(PROJECT_ROOT)))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(map(str, tmp_path.iterdir()))],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0 and "facematch" not in result.stderr, result.stderr


@pytest.mark.parametrize("unit", LONG_RUNNING, ids=lambda u: u.name)
def test_each_component_unit_is_notified_watched_limited_bound_and_hardened(unit):
    text = unit.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "StartLimitIntervalSec=",
        "StartLimitBurst=",
        "PartOf=facematch.target",
        "Requires=redis-server.service mosquitto.service",
        "After=redis-server.service mosquitto.service",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "User=facematch",
        "EnvironmentFile=/etc/facematch/facematch.env",
    ):
        assert line in text, f"{unit.name}: {line}"  # fmt: skip
    # Devices: none at all, or only those the install's drop-in allows (never in the shipped unit itself).
    assert "PrivateDevices=yes" in text or "DevicePolicy=closed" in text
    assert "DeviceAllow=" not in text
    writes = [line for line in text.splitlines() if line.startswith("ReadWritePaths=")]
    assert writes in ([], ["ReadWritePaths=/var/lib/facematch"]), writes


def test_install_system_stops_with_one_line_where_systemd_is_not_pid_1():
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here: the refusal is for machines without it")
    before = Path("/opt/facematch").exists()
    result = subprocess.run(["bash", str(PROJECT_ROOT / "install.sh"), "--system"], capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "systemd is not running here" in lines[0] and "nothing was changed" in lines[0], lines
    assert Path("/opt/facematch").exists() == before


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _install(root: Path, user: str, **device: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMATCH_") and k not in ("DEVICE_ID",
           "CENTRAL_MQTT_URL")} | device  # fmt: skip
    return subprocess.run([sys.executable, "-m", "edge.cli", "system", "install", "--root", str(root),
                           "--release", str(PROJECT_ROOT), "--user", user],
                          capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=120)  # fmt: skip


def test_the_layout_in_a_throwaway_root_then_an_upgrade_then_uninstall(tmp_path):
    root = tmp_path / "root"
    user = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    owner = pwd.getpwnam(user)
    # The distribution's files the install extends, and a config the operator already wrote (a relay, an OSDP
    # reader, a USB camera): it must be kept, and decide the units' device drop-ins.
    (root / "etc/redis").mkdir(parents=True)
    (root / "etc/redis/redis.conf").write_text("bind 127.0.0.1 -::1\nappendonly no\n")
    (root / "etc/facematch").mkdir(parents=True)
    operator_config = {"camera": {"source": "v4l2", "device": "/dev/video2"}, "display": {"enabled": False},
                       "door": {"relay": {"enabled": True, "chip": "/dev/gpiochip4"},
                                "osdp": {"enabled": True, "port": "/dev/ttyUSB1"}}}  # fmt: skip
    (root / "etc/facematch/config.yaml").write_text(yaml.safe_dump(operator_config))

    first = _install(root, user, DEVICE_ID="front-door", CENTRAL_MQTT_URL="mqtts://fleet.example:8883")
    assert first.returncode == 0, first.stderr
    etc, state = root / "etc/facematch", root / "var/lib/facematch"
    assert yaml.safe_load((etc / "config.yaml").read_text()) == operator_config  # kept
    assert _mode(etc) == 0o750 and _mode(state) == 0o750 and state.stat().st_uid == owner.pw_uid
    credentials = json.loads((etc / "credentials.json").read_text())
    assert _mode(etc / "credentials.json") == 0o600 and (etc / "credentials.json").stat().st_uid == owner.pw_uid
    assert (credentials["mqtt_port"], credentials["redis_port"]) == (1883, 6379)
    assert _mode(etc / "gallery.key") == 0o600
    env = dict(line.split("=", 1) for line in (etc / "facematch.env").read_text().splitlines() if "=" in line)
    assert (
        env["FACEMATCH_CONFIG"] == "/etc/facematch/config.yaml" and env["FACEMATCH_STATE_DIR"] == "/var/lib/facematch"
    )
    assert env["FACEMATCH_CREDENTIALS_FILE"] == "/etc/facematch/credentials.json"
    assert env["DEVICE_ID"] == "front-door" and env["CENTRAL_MQTT_URL"] == "mqtts://fleet.example:8883"
    keys = json.loads((state / "api_keys.json").read_text())["keys"]
    assert len(keys) == 1 and _mode(state / "api_keys.json") == 0o600 and "fm_" in first.stdout

    # Mosquitto: hashed passwords only, the ACL, loopback; Redis: the password and append-only persistence, included
    # once at the end of the distribution's file.
    passwd = (root / "etc/mosquitto/facematch.passwd").read_text()
    assert _mode(root / "etc/mosquitto/facematch.passwd") == 0o600
    assert {line.split(":")[0] for line in passwd.splitlines()} == set(credentials["mqtt"])
    assert all(password not in passwd for password in credentials["mqtt"].values())
    assert "user hub" in (root / "etc/mosquitto/facematch.acl").read_text()
    mosquitto = (root / "etc/mosquitto/conf.d/facematch.conf").read_text()
    assert "listener 1883 127.0.0.1" in mosquitto and "allow_anonymous false" in mosquitto
    redis_conf = (root / "etc/redis/facematch.conf").read_text()
    assert f"requirepass {credentials['redis']}" in redis_conf and "appendonly yes" in redis_conf
    assert _mode(root / "etc/redis/facematch.conf") == 0o640
    assert (root / "etc/redis/redis.conf").read_text().splitlines()[-1] == "include /etc/redis/facematch.conf"

    # Units, and devices only where config needs them.
    units = root / "etc/systemd/system"
    assert {p.name for p in units.glob("facematch*.service")} >= {"facematch-hub.service", "facematch-door.service"}
    camera = (units / "facematch-camera.service.d/devices.conf").read_text()
    assert "DeviceAllow=/dev/video2 rw" in camera and "SupplementaryGroups=video" in camera
    door = (units / "facematch-door.service.d/devices.conf").read_text()
    assert "DeviceAllow=/dev/gpiochip4 rw" in door and "DeviceAllow=/dev/ttyUSB1 rw" in door
    assert not (units / "facematch-hub.service.d").exists() and not (units / "facematch-inference.service.d").exists()
    assert not (units / "facematch-display.service.d").exists()  # display.enabled: false
    wants = (units / "facematch.target.d/components.conf").read_text()
    assert "facematch-door.service" in wants and "facematch-display.service" not in wants
    wrapper = root / "usr/local/bin/facematch"
    assert _mode(wrapper) == 0o755 and "/opt/facematch/current/.venv/bin/facematch" in wrapper.read_text()
    assert (root / "opt/facematch/current").resolve() == PROJECT_ROOT.resolve()

    # Upgrade in place: the same credentials and key, the config kept, no second API key, one include line.
    second = _install(root, user)
    assert second.returncode == 0, second.stderr
    assert json.loads((etc / "credentials.json").read_text()) == credentials
    assert "DEVICE_ID=front-door" in (etc / "facematch.env").read_text()  # kept without being given again
    assert len(json.loads((state / "api_keys.json").read_text())["keys"]) == 1
    assert (root / "etc/redis/redis.conf").read_text().count("include /etc/redis/facematch.conf") == 1

    # A config the new release cannot read stops the upgrade before anything is switched.
    (etc / "config.yaml").write_text("door: {relay: {enabled: maybe}}\n")
    broken = _install(root, user)
    assert broken.returncode == 1 and "nothing was switched" in broken.stderr, broken.stderr
    (etc / "config.yaml").write_text(yaml.safe_dump(operator_config))

    removed = subprocess.run([sys.executable, "-m", "edge.cli", "system", "uninstall", "--root", str(root)],
                             capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt/facematch").exists() and not list(units.glob("facematch*"))
    assert not (root / "etc/mosquitto/conf.d/facematch.conf").exists() and not wrapper.exists()
    assert "include /etc/redis/facematch.conf" not in (root / "etc/redis/redis.conf").read_text()
    assert (etc / "credentials.json").exists() and (state / "api_keys.json").exists()  # kept, and said so
    assert "kept" in removed.stdout and str(etc) in removed.stdout


def test_the_installed_broker_config_admits_each_component_and_refuses_strangers(tmp_path):
    """The generated passwords and ACL loaded by a real Mosquitto (the drop-in's listener moved to a free port)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.services import LocalService, free_port

    root = tmp_path / "root"
    user = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert _install(root, user).returncode == 0
    credentials = json.loads((root / "etc/facematch/credentials.json").read_text())
    port = free_port()
    conf = (root / "etc/mosquitto/conf.d/facematch.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port}").replace("/etc/mosquitto/", f"{root}/etc/mosquitto/")
    if os.geteuid() == 0:
        conf += f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        for name in ("facematch.passwd", "facematch.acl"):
            os.chown(root / "etc/mosquitto" / name, 0, 0)
    (tmp_path / "mosquitto.conf").write_text(conf)
    broker = LocalService("mosquitto", port, tmp_path, [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                                                        str(tmp_path / "mosquitto.conf")]).start()  # fmt: skip
    try:

        def connects(username: str | None, password: str | None) -> bool:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            if username:
                client.username_pw_set(username, password)
            try:
                client.connect("127.0.0.1", port)
            except OSError:
                return False
            result: list[int] = []
            client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
            client.loop_start()
            for _ in range(50):
                if result:
                    break
                time.sleep(0.05)
            client.loop_stop()
            client.disconnect()
            return result == [0]

        assert connects("hub", credentials["mqtt"]["hub"])
        assert connects("inference", credentials["mqtt"]["inference"])
        assert not connects("hub", "wrong")
        assert not connects(None, None)
    finally:
        broker.stop()
