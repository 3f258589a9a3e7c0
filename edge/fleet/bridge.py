"""The Mosquitto bridge from a device's local broker to the central broker (Mosquitto's own bridge: it queues QoS 1
messages while the link is down, persisted, and delivers them afterwards — no application outbox).

Out: the device's events, presence and stats, and command results. In: fleet commands only. Never frames, RPC
requests or replies (which carry images), never embeddings. The bridge logs in to the local broker as its own user,
whose ACL says the same (``edge/credentials.py``).
"""

from __future__ import annotations

from edge.bus.client import BrokerAddress
from edge.bus.topics import Topics
from edge.config import Settings
from edge.fleet.homeassistant import node_id


def bridge_lines(settings: Settings, local_password: str | None) -> list[str]:
    """The ``connection`` section of the local Mosquitto's config for ``mqtt.central_url``."""
    from edge.credentials import BRIDGE_USER

    if not settings.mqtt.central_url:
        return []
    central = BrokerAddress.parse(settings.mqtt.central_url)
    base = Topics.from_settings(settings).base
    device = settings.device_id
    lines = [
        f"connection facematch-{device}",
        f"address {central.host}:{central.port}",
        "bridge_protocol_version mqttv50",
        f"remote_clientid facematch-bridge-{device}",
        f"local_clientid facematch-bridge-local-{device}",
        # The central broker keeps this device's session (its subscription to commands) across a lost link.
        "cleansession false",
        "restart_timeout 1 30",
        "max_queued_messages 100000",
        "queue_qos0_messages false",
        f"topic {base}/events/# out 1",
        f"topic {base}/+/+/status out 1",
        f"topic {base}/+/+/info out 1",
        f"topic {base}/stats out 0",
        f"topic {base}/cmd/+/result out 1",
        f"topic {base}/cmd/+ in 1",
        f"topic {settings.mqtt.home_assistant_prefix.strip('/')}/+/{node_id(settings)}/+/config out 1",
    ]
    if central.username:
        lines.append(f"remote_username {central.username}")
    if central.password:
        lines.append(f"remote_password {central.password}")
    if local_password is not None:
        lines += [f"local_username {BRIDGE_USER}", f"local_password {local_password}"]
    if central.tls:
        mqtt = settings.mqtt
        if mqtt.central_cafile:
            lines.append(f"bridge_cafile {mqtt.central_cafile}")
        else:
            lines.append("bridge_capath /etc/ssl/certs")
        if mqtt.central_certfile and mqtt.central_keyfile:
            lines += [f"bridge_certfile {mqtt.central_certfile}", f"bridge_keyfile {mqtt.central_keyfile}"]
    return lines
