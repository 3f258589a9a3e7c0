"""``facematch fleet``: the fleet manager's tool against the central broker — list devices, send commands, tail
events. A thin client over the same topics and messages as the devices (``edge/bus``)."""

from __future__ import annotations

import argparse
import json
import queue
import ssl
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.bus.client import BrokerAddress
from edge.bus.messages import CommandResult, FleetCommand, WorkerInfo
from edge.bus.topics import Topics


class FleetError(Exception):
    pass


class Fleet:
    def __init__(self, url: str, prefix: str = "facematch", cafile: Path | None = None,
                 certfile: Path | None = None, keyfile: Path | None = None):  # fmt: skip
        self.address = BrokerAddress.parse(url)
        self.prefix = prefix.strip("/")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"facematch-fleet-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        if self.address.username:
            self.client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self.client.tls_set(ca_certs=str(cafile) if cafile else None, certfile=str(certfile) if certfile else None,
                                keyfile=str(keyfile) if keyfile else None, cert_reqs=ssl.CERT_REQUIRED)  # fmt: skip
        self.messages: queue.Queue = queue.Queue()
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)

    def __enter__(self) -> Fleet:
        try:
            self.client.connect(self.address.host, self.address.port, keepalive=30)
        except OSError as exc:
            raise FleetError(f"the central broker {self.address} cannot be reached: {exc}") from None
        self.client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _drain(self, until: float) -> list[mqtt.MQTTMessage]:
        got = []
        while time.monotonic() < until:
            try:
                got.append(self.messages.get(timeout=max(0.01, until - time.monotonic())))
            except queue.Empty:
                break
        return got

    def devices(self, wait: float = 1.5) -> dict[str, dict[str, dict[str, Any]]]:
        """device -> "component/instance" -> {"status", "version", "host"} from the retained presence."""
        self.client.subscribe(f"{self.prefix}/+/+/+/status", qos=1)
        self.client.subscribe(f"{self.prefix}/+/+/+/info", qos=1)
        found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for message in self._drain(time.monotonic() + wait):
            parts = message.topic.split("/")
            if len(parts) != 5 or parts[0] != self.prefix:
                continue
            device, key, kind = parts[1], f"{parts[2]}/{parts[3]}", parts[4]
            entry = found[device].setdefault(key, {})
            if kind == "status":
                entry["status"] = message.payload.decode()
            else:
                try:
                    info = WorkerInfo.model_validate_json(message.payload)
                    entry.update(version=info.version, host=info.host)
                except ValueError:
                    pass
        return dict(found)

    def send(self, name: str, devices: list[str], args: dict[str, Any] | None = None,
             timeout: float = 5.0) -> dict[str, CommandResult | None]:  # fmt: skip
        """One command to each device; each device's result (None when none came within ``timeout``)."""
        pending: dict[bytes, str] = {}
        for device in devices:
            topics = Topics(self.prefix, device)
            self.client.subscribe(topics.command_result(name), qos=1)
        time.sleep(0.2)  # the subscriptions are in place before any result can come
        for device in devices:
            topics = Topics(self.prefix, device)
            correlation = uuid.uuid4().bytes
            pending[correlation] = device
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
            self.client.publish(topics.command(name), FleetCommand(args=args or {}).to_bytes(), qos=1,
                                properties=props)  # fmt: skip
        results: dict[str, CommandResult | None] = dict.fromkeys(devices)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            correlation = getattr(message.properties, "CorrelationData", None)
            if correlation in pending:
                results[pending.pop(correlation)] = CommandResult.model_validate_json(message.payload)
        return results

    def tail(self, seconds: float | None = None) -> None:
        self.client.subscribe(f"{self.prefix}/+/events/#", qos=1)
        end = time.monotonic() + seconds if seconds else float("inf")
        while time.monotonic() < end:
            for message in self._drain(min(end, time.monotonic() + 1.0)):
                print(message.topic, message.payload.decode(errors="replace"), flush=True)


def add_parser(sub: argparse._SubParsersAction) -> None:
    fleet = sub.add_parser("fleet", help="the fleet from the central broker: devices, commands, events")
    fleet.add_argument("--url", required=True, help="the central broker, mqtt(s)://user:password@host:port")
    fleet.add_argument("--prefix", default="facematch")
    fleet.add_argument("--cafile", type=Path)
    fleet.add_argument("--certfile", type=Path)
    fleet.add_argument("--keyfile", type=Path)
    commands = fleet.add_subparsers(dest="fleet_command", required=True)
    commands.add_parser("devices", help="every device with its components' status and version")
    send = commands.add_parser("send", help="a command to one or many devices; prints each result")
    send.add_argument("name", help="ping, config-get, subjects-list, subjects-delete, audit")
    send.add_argument("devices", nargs="*", help="device ids (default: every device seen)")
    send.add_argument("--args", default="{}", help="the command's arguments as JSON")
    send.add_argument("--timeout", type=float, default=5.0)
    tail = commands.add_parser("tail", help="print the devices' events as they come")
    tail.add_argument("--seconds", type=float)


def main(args: argparse.Namespace) -> int:
    try:
        with Fleet(args.url, args.prefix, args.cafile, args.certfile, args.keyfile) as fleet:
            if args.fleet_command == "devices":
                for device, parts in sorted(fleet.devices().items()):
                    print(device)
                    for key, entry in sorted(parts.items()):
                        print(f"  {key:<28} {entry.get('status', '?'):<8} {entry.get('version', '')} "
                              f"{entry.get('host', '')}")  # fmt: skip
            elif args.fleet_command == "send":
                devices = args.devices or sorted(fleet.devices())
                results = fleet.send(args.name, devices, json.loads(args.args), args.timeout)
                for device, result in results.items():
                    print(f"{device}: " + ("no answer" if result is None else result.model_dump_json()))
                return 0 if all(r is not None and r.ok for r in results.values()) else 1
            else:
                fleet.tail(args.seconds)
    except FleetError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0
