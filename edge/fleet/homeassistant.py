"""Home Assistant MQTT discovery: retained ``config`` messages that make a device appear in Home Assistant with
"Last person", "Access granted" and its availability (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).

Published by the hub when ``mqtt.home_assistant`` is on; bridged to the central broker with the rest.
"""

from __future__ import annotations

import json
from typing import Any

from edge import __version__
from edge.bus.topics import Component, EventKind, Topics
from edge.config import Settings


def node_id(settings: Settings) -> str:
    return "facematch_" + "".join(c if c.isalnum() else "_" for c in settings.device_id)


def discovery_messages(settings: Settings) -> dict[str, dict[str, Any]]:
    """topic -> config payload, for every entity of this device."""
    topics = Topics.from_settings(settings)
    node = node_id(settings)
    prefix = settings.mqtt.home_assistant_prefix.strip("/")
    device = {
        "identifiers": [node],
        "name": f"facematch {settings.device_id}",
        "manufacturer": "facematch",
        "model": "face-recognition door appliance",
        "sw_version": __version__,
    }
    availability = {
        "availability_topic": topics.status(Component.HUB, settings.instance_id or settings.host_id),
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    access = topics.event(EventKind.ACCESS)
    return {
        f"{prefix}/sensor/{node}/last_person/config": {
            "name": "Last person",
            "unique_id": f"{node}_last_person",
            "state_topic": access,
            "value_template": "{{ value_json.name if value_json.decision == 'granted' and value_json.name "
            "else value_json.decision }}",
            "json_attributes_topic": access,
            "icon": "mdi:account-check",
            "device": device,
            **availability,
        },
        f"{prefix}/binary_sensor/{node}/access_granted/config": {
            "name": "Access granted",
            "unique_id": f"{node}_access_granted",
            "state_topic": access,
            "value_template": "{{ 'ON' if value_json.decision == 'granted' else 'OFF' }}",
            "off_delay": int(settings.door.unlock_seconds) or 1,
            "device_class": "door",
            "device": device,
            **availability,
        },
    }


def payloads(settings: Settings) -> dict[str, bytes]:
    return {topic: json.dumps(config).encode() for topic, config in discovery_messages(settings).items()}
