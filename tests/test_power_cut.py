"""Power-cut safety: processes killed with SIGKILL at random moments during enrolment, config changes, key creation
and model fetches, then restarted; every record is found whole or absent.

A kill -9 of Redis loses nothing Redis acknowledged (it writes the append-only file before it answers); a power cut
can also tear the file's last write, which is simulated by cutting the file at random offsets: Redis then drops the
torn transaction whole (``aof-load-truncated``), never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.services import free_port, redis_service
from edge.store import Store, keys
from edge.store.gallery import Gallery, Subject
from edge.store.sealing import Sealer, create_key_file
from tests.conftest import PROJECT_ROOT

ROUNDS = 4
CUTS = 6

# Enrols people with two faces each, as fast as it can, and says which writes Redis acknowledged.
ENROLLER = """
import sys
from pathlib import Path
import numpy as np
from edge.store import Store
from edge.store.gallery import FaceRecord, Gallery
from edge.store.sealing import Sealer

def vector(person, face):
    v = np.random.default_rng(person * 10 + face).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)

gallery = Gallery(Store(sys.argv[1]), Sealer.from_file(Path(sys.argv[2])))
person = 0
while True:
    subject_id = gallery.create_subject(f"person-{person}")
    print(f"subject {subject_id}", flush=True)
    for face in range(2):
        gallery.add_face(subject_id, FaceRecord(face_id=f"f{face}", embeddings={"m": vector(person, face)}))
        print(f"face {subject_id} f{face}", flush=True)
    person += 1
"""


def _vector(person: int, face: int) -> np.ndarray:
    v = np.random.default_rng(person * 10 + face).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def _whole_subjects(url: str, sealer: Sealer) -> list[Subject]:
    """Every subject whole (its record, its place in the list, each face opening with the key) or absent."""
    store = Store(url)
    try:
        gallery = Gallery(store, sealer)
        client = gallery.store.client
        listed = set(gallery.subject_ids())
        stored = {key.decode().removeprefix(keys.subject("")) for key in client.scan_iter(keys.subject("*"))}
        assert listed == stored, f"listed without a record: {listed - stored}; a record not listed: {stored - listed}"
        subjects = [gallery.get(subject_id) for subject_id in listed]
        assert all(s.credential is not None and s.created > 0 for s in subjects)
        version = int(client.get(keys.gallery_version()) or 0)
        assert version >= len(subjects) + sum(len(s.faces) for s in subjects)  # each write raised it
        return subjects
    finally:
        store.close()


def _check_gallery(url: str, sealer: Sealer) -> set[str]:
    """Whole or absent, each face the vector that was written; returns what was found, as the enroller's
    acknowledgement lines."""
    found = set()
    for subject in _whole_subjects(url, sealer):
        person = int(subject.name.removeprefix("person-"))
        found.add(f"subject {subject.subject_id}")
        for face in subject.faces:
            assert np.allclose(face.embeddings["m"], _vector(person, int(face.face_id[1:])), atol=1e-6)
            found.add(f"face {subject.subject_id} {face.face_id}")
    return found


def _kill_enrolment(tmp_path: Path, key: Path, victim: str, seed: int) -> tuple[Path, set[str]]:
    """Run the enroller against a persistent Redis, SIGKILL ``victim`` (redis or the enroller) at a random moment;
    returns Redis's data folder and the writes Redis acknowledged."""
    data = tmp_path / f"redis-{seed}"
    server = redis_service(free_port(), data, persistent=True).start()
    url = f"redis://127.0.0.1:{server.port}/0"
    enroller = subprocess.Popen([sys.executable, "-c", ENROLLER, url, str(key)], cwd=PROJECT_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    time.sleep(random.Random(seed).uniform(0.8, 2.0))
    (server.process if victim == "redis" else enroller).send_signal(signal.SIGKILL)
    time.sleep(0.2)
    for process in (enroller, server.process):
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)
    acknowledged = set(enroller.stdout.read().splitlines()) if enroller.stdout else set()
    return data, acknowledged


def _reopen(data: Path, copy: Path) -> tuple[object, str]:
    shutil.copytree(data / "appendonlydir", copy / "appendonlydir")
    server = redis_service(free_port(), copy, persistent=True).start()
    return server, f"redis://127.0.0.1:{server.port}/0"


@pytest.mark.parametrize("victim", ["redis", "enroller"])
def test_enrolment_killed_at_random_moments_leaves_every_record_whole_or_absent(tmp_path, victim):
    key = tmp_path / "gallery.key"
    create_key_file(key)
    sealer = Sealer.from_file(key)
    for round_ in range(ROUNDS):
        data, acknowledged = _kill_enrolment(tmp_path, key, victim, seed=round_)
        assert len(acknowledged) > 10, "the enroller barely started"
        server, url = _reopen(data, tmp_path / f"reopened-{victim}-{round_}")
        try:
            found = _check_gallery(url, sealer)
        finally:
            server.stop()
        assert acknowledged <= found, f"acknowledged but lost: {sorted(acknowledged - found)[:5]}"
        # The power cut: the append-only file's tail torn at random offsets.
        (incr,) = (data / "appendonlydir").glob("*.incr.aof")
        size = incr.stat().st_size
        for cut, offset in enumerate(random.Random(round_).sample(range(1, size), min(CUTS, size - 1))):
            torn = tmp_path / f"torn-{victim}-{round_}-{cut}"
            shutil.copytree(data / "appendonlydir", torn / "appendonlydir")
            with (torn / "appendonlydir" / incr.name).open("r+b") as handle:
                handle.truncate(offset)
            server = redis_service(free_port(), torn, persistent=True).start()
            try:
                _check_gallery(f"redis://127.0.0.1:{server.port}/0", sealer)
            finally:
                server.stop()


# -- files: config, keys, credentials, models ---------------------------------------------------------------------

CONFIG_WRITER = """
import sys
from edge.config import write_fleet_overrides
from edge.credentials import ensure
from hub.security import create_key
from pathlib import Path
env = {"FACEMATCH_STATE_DIR": sys.argv[1], "FACEMATCH_CONFIG": sys.argv[2]}
step = 0
while True:
    write_fleet_overrides({"camera.fps": 1 + step % 50, "display.fps": 10 + step % 50}, env)
    print(f"config {step}", flush=True)
    create_key(Path(sys.argv[1]) / "api_keys.json", f"k{step}")
    print(f"key {step}", flush=True)
    ensure(Path(sys.argv[1]) / "credentials.json", rotate=True)
    step += 1
"""


def test_config_keys_and_credentials_killed_mid_write_are_old_or_new_never_half(tmp_path):
    from edge.config import FLEET_OVERRIDES, load_settings

    state, config = tmp_path / "state", tmp_path / "config.yaml"
    config.write_text("log_level: INFO\n")
    for round_ in range(ROUNDS * 2):
        writer = subprocess.Popen([sys.executable, "-c", CONFIG_WRITER, str(state), str(config)], cwd=PROJECT_ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        time.sleep(random.Random(round_).uniform(1.0, 2.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        lines = writer.stdout.read().splitlines() if writer.stdout else []
        assert any(line.startswith("config") for line in lines), "the writer never got going"
        settings = load_settings(environ={"FACEMATCH_STATE_DIR": str(state), "FACEMATCH_CONFIG": str(config)})
        overrides = yaml.safe_load((state / FLEET_OVERRIDES).read_text())
        assert overrides["display"]["fps"] == overrides["camera"]["fps"] + 9  # both keys from the same write
        assert settings.camera.fps == overrides["camera"]["fps"]
        keys_written = json.loads((state / "api_keys.json").read_text())["keys"]
        acknowledged = {line.split()[1] for line in lines if line.startswith("key")}
        assert {f"k{s}" for s in acknowledged} <= {k["name"] for k in keys_written}
        credentials = json.loads((state / "credentials.json").read_text())
        assert credentials["redis"] and len(credentials["mqtt"]) >= 6
        assert not [p for p in state.iterdir() if not p.name.startswith(".") and p.suffix == ".part"]


def test_a_model_fetch_killed_at_random_moments_never_leaves_a_bad_file_under_a_models_name(tmp_path):
    from models.derive import dequantized_path
    from models.manifest import load_manifest, sha256_of

    source = PROJECT_ROOT / "models" / "weights"
    spec = load_manifest().models["sface"]
    if not (source / spec.file).exists():
        pytest.skip("sface is not fetched in this checkout (facematch models fetch)")
    target = tmp_path / "models"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FACEMATCH_")},
           "FACEMATCH_MODELS_DIR": str(source), "FACEMATCH_MODELS__DIR": str(target)}  # fmt: skip
    command = [sys.executable, "-m", "edge.cli", "models", "fetch", "sface"]
    started = time.monotonic()
    subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=300)
    duration = time.monotonic() - started
    whole = {path.name: sha256_of(path) for path in target.iterdir() if not path.name.startswith(".")}
    assert set(whole) == {spec.file, dequantized_path(target / spec.file).name}
    for round_ in range(ROUNDS * 2):
        shutil.rmtree(target, ignore_errors=True)
        fetch = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(random.Random(round_).uniform(0.3, duration))
        fetch.send_signal(signal.SIGKILL)
        fetch.wait(10)
        if target.exists():
            for path in target.iterdir():
                if not path.name.startswith("."):  # a staged copy under a hidden name is not a model
                    assert sha256_of(path) == whole[path.name], f"{path.name} is half written after a kill"
    subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=300)
    assert {p.name: sha256_of(p) for p in target.iterdir()} == whole  # and the next fetch cleared what was staged


# -- the real components: the inference daemon and Redis killed while the hub enrols people ----------------------


def test_the_inference_daemon_and_redis_killed_during_enrolment_lose_nothing_acknowledged(
    tmp_path, mqtt_broker, model_settings, lfw
):
    """Enrolments through the hub (real LFW photos) while the inference daemon (which writes faces) is killed with
    SIGKILL and restarted, then Redis is: each acknowledged enrolment is whole afterwards, nothing is half there,
    and the restarted daemon identifies the people it enrolled."""
    import base64
    import threading

    from tests.conftest import hub_client, make_settings, wait_for_inference

    people = sorted(p for p in lfw.iterdir() if len(list(p.glob("*.jpg"))) >= 2)[:60]
    key = tmp_path / "gallery.key"
    create_key_file(key)
    redis_port = free_port()
    data = tmp_path / "redis"
    server = redis_service(redis_port, data, persistent=True).start()
    settings = make_settings(tmp_path, redis_port, mqtt_broker.port, FACEMATCH_GALLERY__KEY_FILE=str(key))
    env = {**os.environ, "REDIS_URL": settings.redis.url, "MQTT_URL": settings.mqtt.url, "DEVICE_ID": "test-device",
           "FACEMATCH_GALLERY__KEY_FILE": str(key), "FACEMATCH_STATE_DIR": str(tmp_path / "state")}  # fmt: skip

    def start_daemon() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "edge.inference"], env=env, cwd=PROJECT_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    daemon = start_daemon()
    client = hub_client(settings)
    acknowledged: dict[str, str] = {}  # subject id -> person
    refused: list[int] = []
    stop = threading.Event()

    def enrol() -> None:
        for person in people:
            if stop.is_set():
                return
            photo = base64.b64encode(sorted(person.glob("*.jpg"))[0].read_bytes()).decode()
            response = client.post("/subjects", json={"name": person.name, "photos": [photo]})
            if response.status_code == 201:
                acknowledged[response.json()["subject_id"]] = person.name
            else:
                refused.append(response.status_code)
                time.sleep(0.2)

    try:
        wait_for_inference(client, timeout=90, routes=("enroll",))
        enroller = threading.Thread(target=enrol)
        enroller.start()
        time.sleep(random.Random(1).uniform(2.0, 4.0))
        daemon.send_signal(signal.SIGKILL)  # mid-enrolment
        daemon.wait(10)
        daemon = start_daemon()
        wait_for_inference(client, timeout=90, routes=("enroll",))
        time.sleep(random.Random(2).uniform(1.0, 3.0))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        time.sleep(0.5)
        server = redis_service(redis_port, data, persistent=True).start()
        time.sleep(3.0)
        stop.set()
        enroller.join(120)
        assert len(acknowledged) >= 5, f"only {len(acknowledged)} enrolments went through ({refused})"
        subjects = _whole_subjects(settings.redis.url, Sealer.from_file(key))
        for vector in (v for s in subjects for f in s.faces for v in f.embeddings.values()):
            assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
        found = {s.subject_id: len(s.faces) for s in subjects}
        assert set(acknowledged) <= set(found), "an acknowledged enrolment was lost"
        assert all(found[s] >= 1 for s in acknowledged)  # each with its face
        # The restarted daemon knows whom it enrolled (after Redis's restart too).
        subject_id, person = next(iter(acknowledged.items()))
        probe = base64.b64encode(sorted((lfw / person).glob("*.jpg"))[1].read_bytes()).decode()
        identified = client.post("/identify", json={"image": probe})
        assert identified.status_code == 200, identified.text
        assert identified.json()["candidates"][0]["subject_id"] == subject_id
    finally:
        stop.set()
        client.__exit__(None, None, None)
        daemon.kill()
        daemon.wait(10)
        server.stop()
