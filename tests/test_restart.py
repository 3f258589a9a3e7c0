"""Restarting a component without `facematch up` (systemd units): SIGHUP makes a daemon stop cleanly and exit with
the restart code (which `Restart=on-failure` starts again), and the fleet's restart command sends it to the
component's processes on this host, found through their presence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.bus import Bus, Component, Presence
from edge.daemon import RESTART_EXIT

ROOT = Path(__file__).resolve().parent.parent


def camera_daemon(settings, tmp_path) -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": settings.redis.url, "MQTT_URL": settings.mqtt.url,
           "DEVICE_ID": settings.device_id, "FACEMATCH_STATE_DIR": str(tmp_path / "state"),
           "FACEMATCH_CAMERA__SOURCE": "file", "FACEMATCH_CAMERA__DEVICE": str(tmp_path / "not-yet.mp4")}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "edge.camera"], env=env, cwd=ROOT)


def test_sighup_is_a_clean_stop_with_the_restart_exit_code(settings, tmp_path):
    process = camera_daemon(settings, tmp_path)
    try:
        time.sleep(3)
        assert process.poll() is None
        process.send_signal(signal.SIGHUP)
        assert process.wait(15) == RESTART_EXIT
    finally:
        if process.poll() is None:
            process.kill()


def test_the_restart_command_signals_the_components_processes_on_this_host(settings, tmp_path):
    from edge.fleet.commands import CommandAgent

    process = camera_daemon(settings, tmp_path)
    hub = Bus(settings, Component.HUB)
    presence = Presence(hub)
    try:
        assert hub.start(wait=5)
        assert presence.wait_until(lambda p: process.pid in p.local_pids(Component.CAMERA, settings.host_id), 15)
        agent = CommandAgent(settings, hub, None, None, presence.online, presence.local_pids)  # type: ignore[arg-type]
        assert agent.restart_without_supervisor({"component": "camera"}) == {"restarted": "camera", "processes": 1}
        assert process.wait(15) == RESTART_EXIT
        try:
            agent.restart_without_supervisor({"component": "door"})
        except Exception as exc:
            assert getattr(exc, "code", None).value == "not_supported" and "no door runs" in str(exc)
        else:
            raise AssertionError("a component that is not running was 'restarted'")
    finally:
        hub.stop()
        if process.poll() is None:
            process.kill()
