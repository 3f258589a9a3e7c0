"""``python -m edge.door``: drive the relay and the OSDP reader from ``door/command`` until SIGTERM."""

from __future__ import annotations

import sys

from edge.bus import Bus, Component
from edge.config import Settings
from edge.daemon import Daemon
from edge.door.gpio import GpioError, GpioInput, GpioOutput
from edge.door.osdp import OsdpError, OsdpReader, load_or_create_key, serial_channel
from edge.door.relay import DoorContact, Relay
from edge.door.service import DoorOutputs


def osdp_key_path(settings: Settings):
    return settings.door.osdp.key_file or settings.paths.state_dir / "osdp-scbk.hex"


def main() -> int:
    daemon = Daemon("door")
    daemon.handle_signals()
    settings = daemon.settings
    bus = Bus(settings, Component.DOOR)
    relay = reader = contact = None
    outputs = DoorOutputs(bus)
    inputs = []
    try:
        if settings.door.relay.enabled:
            cfg = settings.door.relay
            relay = Relay(GpioOutput(cfg.chip, cfg.line, cfg.active_low))
            if cfg.contact_line:
                contact = DoorContact(relay, cfg.held_open_seconds)
                inputs.append(GpioInput(cfg.chip, cfg.contact_line, outputs.on_contact, cfg.contact_active_low))
        if settings.door.osdp.enabled:
            osdp = settings.door.osdp
            key = load_or_create_key(osdp_key_path(settings))
            reader = OsdpReader(
                serial_channel(osdp.port, osdp.baud), osdp.address, key, card_format=osdp.card_format,
                facility_code=osdp.facility_code, on_indicator=outputs.on_indicator,
            )  # fmt: skip
    except (GpioError, OsdpError) as exc:
        daemon.log.error("%s", exc)
        return 3
    outputs.relay, outputs.reader, outputs.contact = relay, reader, contact
    outputs.start()
    bus.start(wait=30)
    if reader is not None:
        reader.start()
    parts = [name for name, part in (("relay", relay), ("OSDP reader", reader)) if part is not None]
    daemon.ready(", ".join(parts) or "no output configured (door.relay / door.osdp): MQTT door/command only")
    daemon.run(outputs.tick)
    for line in inputs:
        line.close()
    outputs.close()
    bus.stop()
    return daemon.exit_code()


if __name__ == "__main__":
    sys.exit(main())
