"""`facematch up` on free ports: it starts Redis, Mosquitto, inference and the hub; /health answers; nothing is left."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from edge.services import free_port, port_open

ROOT = Path(__file__).resolve().parent.parent


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_health(port: int, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"/health did not answer 200 within {timeout} s")


@pytest.fixture
def up_env(tmp_path, model_settings):
    """Free ports for `facematch up`; its inference daemon needs the models, so they are fetched first."""
    ports = {"http": free_port(), "redis": free_port(), "mqtt": free_port()}
    env = {
        **os.environ,
        "PORT": str(ports["http"]),
        "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "MQTT_URL": f"mqtt://127.0.0.1:{ports['mqtt']}",
        "FACEMATCH_STATE_DIR": str(tmp_path / "state"),
        "DEVICE_ID": "up-test",
    }
    return env, ports


def start_up(env):
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_up_serves_health_and_sigterm_leaves_no_process(up_env):
    env, ports = up_env
    up = start_up(env)
    try:
        body = wait_health(ports["http"], 60).json()
        assert body["status"] == "healthy"
        assert body["unavailable"] == [] and "dependencies" not in body  # details only with a key
        kids = children_of(up.pid)
        assert len(kids) >= 4, "expected redis-server, mosquitto, the inference daemon and the hub"
        assert body["models"]
        # The embedded services it started let in only the product's own components.
        from edge.bus import Bus, Component
        from edge.config import load_settings
        from edge.store import Store

        outsider = load_settings(environ={"MQTT_URL": env["MQTT_URL"], "DEVICE_ID": "up-test"})
        stranger = Bus(outsider, Component.HUB, instance="stranger")
        try:
            assert not stranger.start(wait=2), "the embedded broker let an anonymous client in"
        finally:
            stranger.stop()
        assert not Store(env["REDIS_URL"], socket_timeout=1).ping(), "the embedded Redis answered without a password"
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, output
    assert "all processes stopped" in output
    for pid in kids:
        assert not alive(pid), f"child {pid} survived"
    for port in ports.values():
        assert not port_open("127.0.0.1", port), f"port {port} still open"
    assert (Path(env["FACEMATCH_STATE_DIR"]) / "redis" / "redis.conf").exists()


def test_up_restarts_a_child_that_dies(up_env):
    env, ports = up_env
    up = start_up(env)
    try:
        wait_health(ports["http"], 60)
        hub = next(pid for pid in children_of(up.pid) if "-m\0hub" in Path(f"/proc/{pid}/cmdline").read_text())
        os.kill(hub, signal.SIGKILL)
        time.sleep(0.5)
        wait_health(ports["http"], 30)
        new_hub = [pid for pid in children_of(up.pid) if "-m\0hub" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert new_hub and new_hub[0] != hub
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
    assert "hub exited with code -9; restarting" in output
    assert "hub restarted" in output


def test_up_uses_services_that_already_answer(up_env, redis_server, mqtt_broker):
    env, ports = up_env
    env = {
        **env,
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "MQTT_URL": f"mqtt://127.0.0.1:{mqtt_broker.port}",
    }
    up = start_up(env)
    try:
        wait_health(ports["http"], 60)
        assert len(children_of(up.pid)) == 3  # only the inference daemon, the hub and the camera daemon
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
    assert "using the Redis already answering" in output and "using the MQTT broker already answering" in output
    assert redis_server.running() and mqtt_broker.running()


def test_health_is_503_naming_redis_when_it_is_down(up_env, mqtt_broker):
    env, ports = up_env
    # A Redis socket that nothing serves: up must not start one, and the hub must say so.
    env = {**env, "REDIS_URL": "unix:///nonexistent/redis.sock", "MQTT_URL": f"mqtt://127.0.0.1:{mqtt_broker.port}"}
    up = start_up(env)
    try:
        deadline = time.monotonic() + 60
        response = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{ports['http']}/health", timeout=10)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert response is not None and response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy"
        assert "redis" in body["unavailable"] and "broker" not in body["unavailable"]
    finally:
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=30)


def test_a_second_up_refuses_with_one_clear_line(up_env, tmp_path):
    import socket

    from edge.supervisor import lock_state_dir

    env, ports = up_env
    # The HTTP port is taken by something else: refuse, instead of "facematch is up" and a web server restarting.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["http"]))
        taken.listen()
        second = subprocess.run([sys.executable, "-m", "edge.cli", "up"], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=30)  # fmt: skip
    assert second.returncode == 1
    assert f"the HTTP port 127.0.0.1:{ports['http']} is already in use" in second.stderr
    assert "facematch is up" not in second.stderr
    # The state directory is held by another `facematch up`.
    fd = lock_state_dir(env["FACEMATCH_STATE_DIR"])
    try:
        second = subprocess.run([sys.executable, "-m", "edge.cli", "up"], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=30)  # fmt: skip
    finally:
        os.close(fd)
    assert second.returncode == 1 and "already uses the state directory" in second.stderr


def test_up_keeps_answering_when_either_of_two_workers_stops(up_env, faces_dir):
    """A worker of another host id joins `facematch up`'s broker; /match keeps working when either one stops."""
    import base64

    from edge.bus import Bus, Component, Presence
    from edge.config import load_settings

    env, ports = up_env
    key = "fm_two-workers-test-key"
    env = {**env, "FACEMATCH_API_KEYS": key}
    photo = base64.b64encode((faces_dir / "face_recognition/examples/obama.jpg").read_bytes()).decode()

    def match_ok() -> bool:
        response = httpx.post(f"http://127.0.0.1:{ports['http']}/match", json={"image1": photo, "image2": photo},
                              headers={"X-API-Key": key}, timeout=30)  # fmt: skip
        return response.status_code == 200 and response.json()["match"] is True

    up = start_up(env)
    other_env = {**env, "FACEMATCH_HOST_ID": "other-host", "FACEMATCH_INSTANCE_ID": "other"}
    other = subprocess.Popen([sys.executable, "-m", "edge.inference"], env=other_env, cwd=ROOT)
    # The watcher logs in as the hub (the embedded broker's ACL lets the hub read presence).
    seen_as = {k: v for k, v in env.items() if k in ("MQTT_URL", "DEVICE_ID", "FACEMATCH_STATE_DIR")}
    watcher = Bus(load_settings(environ=seen_as), Component.HUB, instance="test-watcher")
    presence = Presence(watcher)
    try:
        wait_health(ports["http"], 60)
        assert watcher.start(wait=10)
        assert presence.wait_until(lambda p: len(p.online(Component.INFERENCE)) == 2, 90), "the 2nd worker never came"
        other.terminate()  # the extra worker stops cleanly (it used to mark all inference offline)
        other.wait(30)
        assert presence.wait_until(lambda p: len(p.online(Component.INFERENCE)) == 1, 10)
        assert match_ok() and match_ok()
        other = subprocess.Popen([sys.executable, "-m", "edge.inference"], env=other_env, cwd=ROOT)
        assert presence.wait_until(lambda p: "other" in p.online(Component.INFERENCE), 90)
        # Now up's own worker dies: the other one answers at once, while up restarts it.
        own = next(n for n in presence.online(Component.INFERENCE) if n != "other")
        own_pid = presence._instances[(Component.INFERENCE, own)].info.pid
        os.kill(own_pid, signal.SIGKILL)
        assert presence.wait_until(lambda p: p.online(Component.INFERENCE) == ["other"], 10)
        assert match_ok() and match_ok()
    finally:
        watcher.stop()
        other.terminate()
        other.wait(30)
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=30)
