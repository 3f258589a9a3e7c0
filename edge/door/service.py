"""The door-output process's work: ``door/command`` (only the door flow may publish it, by the broker's ACL) drives the
relay and the OSDP card read; the panel's LED/buzzer and the door contact go back on the bus."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from edge.bus import Bus, EventKind
from edge.bus.client import Message
from edge.bus.messages import DoorCommand, DoorEvent, DoorIndicator
from edge.door.osdp import OsdpReader
from edge.door.relay import DoorContact, Relay
from edge.door.wiegand import WiegandError

log = logging.getLogger("facematch.door")

REMEMBERED = 256  # event ids already acted on (QoS 1 may deliver a command twice)


class DoorOutputs:
    def __init__(self, bus: Bus, relay: Relay | None = None, reader: OsdpReader | None = None,
                 contact: DoorContact | None = None):  # fmt: skip
        self.bus = bus
        self.relay = relay
        self.reader = reader
        self.contact = contact
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.last_latency: dict[str, float] = {}

    def start(self) -> None:
        self.bus.subscribe(self.bus.topics.door_command, self.on_command, qos=1)

    def on_command(self, message: Message) -> None:
        if message.retain:
            return  # a retained command is stale by definition
        try:
            command = DoorCommand.model_validate_json(message.payload)
        except ValueError:
            log.warning("ignoring a malformed door command")
            return
        if command.event_id in self._seen:
            return
        self._seen[command.event_id] = None
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        if command.action != "unlock":
            return
        started = time.perf_counter()
        if self.relay is not None:
            self.relay.pulse(command.seconds)
            self.last_latency["relay"] = time.perf_counter() - started
        if self.reader is not None and command.credential is not None:
            try:
                if not self.reader.card_read(command.credential):
                    log.warning("the OSDP line is down: card %s not sent", command.credential)
            except WiegandError as exc:
                log.error("card %s cannot be sent: %s (door.osdp.card_format)", command.credential, exc)
            self.last_latency["osdp"] = time.perf_counter() - started

    def on_indicator(self, indicator: dict) -> None:
        self.bus.publish(self.bus.topics.door_indicator, DoorIndicator(**indicator).to_bytes(), qos=1)

    def on_contact(self, is_open: bool) -> None:
        if self.contact is not None:
            self._report(self.contact.on_change(is_open))

    def tick(self) -> None:
        if self.contact is not None:
            self._report(self.contact.on_tick())

    def _report(self, kind: str | None) -> None:
        if kind is not None:
            event = DoorEvent(device_id=self.bus.settings.device_id, kind=kind)  # type: ignore[arg-type]
            self.bus.publish(self.bus.topics.event(EventKind.DOOR), event.to_bytes(), qos=1)

    def close(self) -> None:
        for part in (self.relay, self.reader):
            if part is not None:
                part.close()
