"""The bridge and the fleet tool over TLS with client certificates (mutual TLS), against a central Mosquitto that
requires them and takes each certificate's CN as the MQTT user (the set-up docs/FLEET.md describes)."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import queue
import shutil
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from edge.bus import Bus, Component, EventKind
from edge.bus.messages import AccessEvent
from edge.config import load_settings
from edge.fleet.bridge import bridge_lines
from edge.fleet.tool import Fleet
from edge.services import LocalService, free_port, mosquitto_service

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")


def issue(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, folder: Path, *, ca: bool = False,
          server: bool = False) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))  # fmt: skip
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    (folder / f"{name}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    return subject, key


@pytest.fixture
def pki(tmp_path):
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = issue("ca", None, folder, ca=True)
    for name, server in (("central", True), ("door-tls", False), ("fleet-manager", False)):
        issue(name, ca, folder, server=server)
    return folder


@pytest.fixture
def central_tls(pki, tmp_path):
    run = tmp_path / "central"
    run.mkdir()
    port = free_port()
    acl = run / "acl"
    acl.write_text("pattern write facematch/%u/events/#\npattern write facematch/%u/+/+/status\n"
                   "pattern write facematch/%u/+/+/info\npattern read facematch/%u/cmd/+\n"
                   "pattern write facematch/%u/cmd/+/result\n\nuser fleet-manager\ntopic read facematch/#\n"
                   "topic write facematch/+/cmd/+\n")  # fmt: skip
    config = run / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\ncafile {pki / 'ca.crt'}\ncertfile {pki / 'central.crt'}\n"
                      f"keyfile {pki / 'central.key'}\nrequire_certificate true\nuse_identity_as_username true\n"
                      f"acl_file {acl}\npersistence false\nlog_dest stdout\nuser {getpass.getuser()}\n")  # fmt: skip
    service = LocalService("central", port, run, [shutil.which("mosquitto"), "-c", str(config)]).start()
    yield service
    service.stop()


def test_events_cross_a_mutual_tls_bridge_and_the_fleet_tool_uses_its_certificate(pki, central_tls, tmp_path):
    local_port = free_port()
    settings = load_settings(environ={
        "DEVICE_ID": "door-tls", "MQTT_URL": f"mqtt://127.0.0.1:{local_port}",
        "CENTRAL_MQTT_URL": f"mqtts://127.0.0.1:{central_tls.port}",
        "FACEMATCH_MQTT__CENTRAL_CAFILE": str(pki / "ca.crt"),
        "FACEMATCH_MQTT__CENTRAL_CERTFILE": str(pki / "door-tls.crt"),
        "FACEMATCH_MQTT__CENTRAL_KEYFILE": str(pki / "door-tls.key"),
    })  # fmt: skip
    lines = bridge_lines(settings, None)
    assert f"bridge_certfile {pki / 'door-tls.crt'}" in lines and "topic facematch/door-tls/cmd/+ in 1" in lines
    assert not any("camera" in line or "rpc" in line for line in lines)  # frames and RPCs never leave the device
    local = mosquitto_service(local_port, tmp_path / "local", bridge=lines).start()
    worker = Bus(settings, Component.INFERENCE)
    try:
        assert worker.start(wait=5)
        with Fleet(f"mqtts://127.0.0.1:{central_tls.port}", cafile=pki / "ca.crt",
                   certfile=pki / "fleet-manager.crt", keyfile=pki / "fleet-manager.key") as fleet:  # fmt: skip
            fleet.client.subscribe("facematch/door-tls/events/#", qos=1)
            time.sleep(2.0)  # the bridge connects (TLS handshake) and the subscription is in place
            event = AccessEvent(device_id="door-tls", decision="unknown")
            worker.publish(worker.topics.event(EventKind.ACCESS), event.to_bytes(), qos=1)
            deadline = time.monotonic() + 15
            received = None
            while received is None and time.monotonic() < deadline:
                try:
                    message = fleet.messages.get(timeout=0.5)
                except queue.Empty:
                    continue
                if message.topic.endswith("/events/access"):
                    received = AccessEvent.model_validate_json(message.payload)
            assert received is not None and received.event_id == event.event_id
            # A device never commands another: its identity may write only its own topics on the central broker.
            fleet.client.subscribe("facematch/door-other/cmd/#", qos=1)
            time.sleep(0.3)
            rogue = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rogue-door", protocol=mqtt.MQTTv5)
            rogue.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / "door-tls.crt"),
                          keyfile=str(pki / "door-tls.key"))  # fmt: skip
            rogue.connect("127.0.0.1", central_tls.port)
            rogue.loop_start()
            rogue.publish("facematch/door-other/cmd/ping", b"{}", qos=1).wait_for_publish(5)
            time.sleep(1.0)
            rogue.loop_stop()
            rogue.disconnect()
            leaked = [m.topic for m in list(fleet.messages.queue) if "/door-other/" in m.topic]
            assert leaked == [], leaked
        # Without a client certificate the central broker refuses the connection (after TLS 1.3's handshake).
        with Fleet(f"mqtts://127.0.0.1:{central_tls.port}", cafile=pki / "ca.crt") as bare:
            assert bare.devices(wait=1.0) == {} and not bare.client.is_connected()
    finally:
        worker.stop()
        local.stop()


def test_bridge_config_writes_the_drop_in_for_the_systems_mosquitto(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "FACEMATCH_STATE_DIR": str(tmp_path), "DEVICE_ID": "door-9"}
    missing = subprocess.run([sys.executable, "-m", "edge.cli", "bridge-config"], env=env, cwd=root,
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 1 and "CENTRAL_MQTT_URL" in missing.stderr
    target = tmp_path / "facematch-bridge.conf"
    env["CENTRAL_MQTT_URL"] = "mqtts://central.example.org:8883"
    subprocess.run([sys.executable, "-m", "edge.cli", "bridge-config", "--output", str(target)], env=env, cwd=root,
                   check=True, capture_output=True)  # fmt: skip
    text = target.read_text()
    assert "address central.example.org:8883" in text and "local_username bridge" in text
    assert "topic facematch/door-9/cmd/+ in 1" in text and "camera" not in text
    assert target.stat().st_mode & 0o777 == 0o640  # it holds the bridge's local password


def test_the_bridge_units_command_removes_a_stale_drop_in_when_no_central_broker_is_set(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    stale = tmp_path / "facematch-bridge.conf"
    stale.write_text("connection old\n")
    env = {**os.environ, "FACEMATCH_STATE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "edge.cli", "bridge-config", "--if-configured", "--output",
                           str(stale)], env=env, cwd=root, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and not stale.exists()
